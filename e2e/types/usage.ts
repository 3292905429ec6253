// A frontend's use of herald-client, type-checked with `tsc --strict` by
// e2e/package.test.mjs against the package as npm installs it.
import { Herald, type AnyEvent, type HeraldError, type Summary } from "herald-client";

const herald = new Herald({
  url: "https://push.example.com",
  token: "t",
  getToken: async () => "renewed",
  transport: "auto",
  storageKey: "app:herald",
  pollInterval: 2000,
  hold: 50,
});

herald
  .on("msg", (e) => {
    const text: string = `${e.data.from} → ${e.data.to}: ${JSON.stringify(e.data.body)} #${e.data.id} at ${e.ts}`;
    const cid: string | null = e.data.cid;
    console.log(text, cid, e.seq);
  })
  .on("group_msg", (e) => console.log(e.data.gid, e.data.msgid, e.data.from))
  .on("presence", (e) => {
    const status: "online" | "busy" | "dnd" | "offline" = e.data.status;
    console.log(e.data.uid, status);
  })
  .on("receipt", (e) => console.log(e.data.kind, e.data.ids.length, e.data.by))
  .on("group_receipt", (e) => console.log(e.data.receipts.map((r) => r.read + r.unread)))
  .on("counter", (e) => console.log(e.data.name, e.data.value + 1))
  .on("typing", (e) => console.log(e.from, e.gid ?? e.to, e.stopped ? "stopped" : "typing"))
  .on("broadcast", (e) => console.log(e.data.bid))
  .on("gap", (e) => console.log(e.data.from, e.data.to, e.data.epoch ?? "same history"))
  .on("hb", (e) => console.log(e.hints?.broadcast))
  .on("status", (s) => console.log(s.transport, s.state, s.delay, s.httpStatus, s.state === "adapting" && s.hold))
  .on("resync", (r) => console.log(r.reason, r.cursor))
  .on("order_shipped", (e) => console.log(e.seq, e.data))
  .on("*", (e: AnyEvent) => console.log(e.type))
  .start();

async function actions(): Promise<void> {
  const { id } = await herald.send("bob", { text: "hi" });
  await herald.markRead(id);
  const { msgid } = await herald.groupSend("team", "hello", "cid-1");
  herald.groupRead("team", msgid);
  const { messages, cursor } = await herald.groupHistory("team", 0);
  console.log(messages[0]?.body, cursor);
  const conversation = await herald.history("bob", { before: id, limit: 20 });
  const unread = conversation.messages.filter((m) => !m.read && m.to === "me").map((m) => m.id);
  console.log(unread, conversation.more, conversation.with);
  const receipts = await herald.groupReceipts("team", [msgid]);
  console.log(receipts.receipts[0]?.readers);
  const { members } = await herald.groupPresence("team");
  const { friends } = await herald.friendsPresence();
  console.log(members["bob"], friends["carol"]);
  await herald.typing("bob");
  await herald.typing({ gid: "team" });
  await herald.setStatus("invisible");
  const { counters } = await herald.counters();
  const news = await herald.news();
  console.log(counters["unread"], news?.date);
  const { broadcasts } = await herald.broadcasts();
  console.log(broadcasts.length);
  try {
    await herald.send("bob", 1);
  } catch (e) {
    const refused = e as HeraldError;
    console.log(refused.code, refused.status);
  }
  const summary: Summary = herald.summary();
  console.log(summary.p50, herald.cursor, herald.epoch, herald.position());
  herald.stop();
}
void actions();
