// socket.io as a benchmark peer: accepts WebSocket clients on the default
// namespace and keeps them open (idle memory); `POST /emit` sends its JSON
// body to every client with one io.emit (fan-out); a client that connects
// with `?room=R` joins room R, and `POST /emit/R` sends to that room only
// (latency).
const { createServer } = require("http");
const { Server } = require("socket.io");
const port = Number(process.argv[2] || 18082);
const http = createServer((req, res) => {
  const room = req.url.startsWith("/emit/") ? req.url.slice("/emit/".length) : null;
  if (req.method !== "POST" || (req.url !== "/emit" && !room)) {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    (room ? io.to(room) : io).emit("notice", JSON.parse(body));
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
});
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (socket) => {
  const room = socket.handshake.query.room;
  if (room) socket.join(room);
});
http.listen(port, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${port}`));
