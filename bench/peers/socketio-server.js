// An idle socket.io server for the connection benchmark: accepts
// WebSocket clients on the default namespace and keeps them open.
const { createServer } = require("http");
const { Server } = require("socket.io");
const port = Number(process.argv[2] || 18082);
const http = createServer();
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", () => {});
http.listen(port, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${port}`));
