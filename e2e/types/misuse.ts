// Mistakes the types must catch: each line below is one tsc error
// (e2e/package.test.mjs counts them).
import { Herald } from "herald-client";

new Herald({ transport: "carrier-pigeon", token: "t" });
new Herald({ url: "https://push.example.com" });
const herald = new Herald({ token: "t" });
herald.on("msg", (e) => e.data.subject);
herald.on("presence", (e) => e.data.status === "away");
herald.setStatus("offline");
herald.send(42, "hi");
herald.groupRead("team", "7");
herald.typing({ to: "bob" });
