// Types of herald.js, the browser client of herald (docs/API.md has the
// protocol; README "Integrating a web chat frontend" the usage).

export type TransportName = "webtransport" | "ws" | "sse" | "iframe" | "longpoll" | "poll";

export interface HeraldOptions {
  /** Server origin; default: the page's. */
  url?: string;
  /** Client token from your backend (`POST /api/v1/tokens`). */
  token: string;
  /** Called on a 401 only, at most once per backoff step. */
  getToken?: () => Promise<string>;
  /** One transport, or "auto": webtransport (where the browser has it and the server serves it) → ws → sse → iframe → longpoll. Default "auto". */
  transport?: TransportName | "auto";
  /** Storage key of the cursor (its epoch under `key + ":epoch"`): in localStorage when shared (default `herald:URL:UID:cursor`), else sessionStorage (default "herald:cursor"). */
  storageKey?: string;
  /** One connection for all tabs of this browser and user: one tab leads, the others get every event from it. Default true where Web Locks and BroadcastChannel exist. */
  share?: boolean;
  /** The user, when the token does not name it (its `sub`); tabs share only within one user. */
  uid?: string;
  /** Short-poll interval, ms. Default 1000. */
  pollInterval?: number;
  /** Long-poll hold, seconds (1-110). Default 25; shortened by itself when a proxy cuts held requests sooner. */
  hold?: number;
  /** The server's heartbeat interval (ms) until a stream announces it; default 15000. A transport that hears nothing for 2.5 of them is reopened from the cursor. */
  heartbeatMs?: number;
  /** Extra (custom) event types to receive over SSE. */
  types?: string[];
}

/** Every queue event: a seq, a type, the append time (ms) and its data. */
export interface QueueEvent<Type extends string = string, Data = unknown> {
  seq: number;
  type: Type;
  ts: number;
  data: Data;
}

export interface DirectMessage {
  id: number;
  from: string;
  to: string;
  body: unknown;
  /** The sender's idempotency key, null if it gave none. */
  cid: string | null;
}

/** A direct message as the conversation history keeps it. */
export interface HistoryMessage extends DirectMessage {
  ts: number;
  /** The recipient marked it read. */
  read: boolean;
}

export interface GroupMessage {
  gid: string;
  msgid: number;
  from: string;
  body: unknown;
  /** The sender's idempotency key, null if it gave none. */
  cid: string | null;
  ts: number;
}

export type PresenceStatus = "online" | "busy" | "dnd" | "offline";
export type ChosenStatus = "online" | "busy" | "dnd" | "invisible";

export interface GroupReceiptCount {
  msgid: number;
  read: number;
  unread: number;
}

/** `gap`: events from..to are gone; with `epoch`, the whole history was recreated. */
export interface GapData {
  from: number;
  to: number;
  epoch?: string;
}

/** Why the transport is (re)connecting, and what it does about it. */
export interface StatusEvent {
  type: "status";
  transport: TransportName;
  state: "connecting" | "open" | "retrying" | "fallback" | "unauthorized" | "adapting" | "stale";
  /** stale: how long nothing was heard (ms) before the transport was reopened. */
  silentMs?: number;
  /** adapting: the long-poll hold (s) from now on, and when the path cut the last one (s). */
  hold?: number;
  cutAfter?: number;
  /** retrying: ms until the next attempt. */
  delay?: number;
  /** retrying: the HTTP status that explained the failure (0: no answer; 200: HTTP works, the transport does not; -1: an open stream ended). */
  httpStatus?: number;
  error?: string;
}

/** Events may be missing: refetch what the page shows. Emitted once per incident. */
export interface ResyncEvent {
  type: "resync";
  reason: "gap" | "epoch" | "cursor_ahead" | "bad_cursor" | "bad_epoch";
  /** The position reading goes on from. */
  cursor: number;
  /** gap: the events that expired. */
  from?: number;
  to?: number;
}

/** A keepalive: `hints.broadcast` is the newest pull broadcast. */
export interface HeartbeatEvent {
  type: "hb";
  hints?: { broadcast?: number };
  /** `--group-receipts keepalive`: receipt totals of your group messages, `{gid: {msgid: {read, unread}}}` (also emitted as `group_receipt` events). */
  receipts?: Record<string, Record<string, { read: number; unread: number }>>;
}

/** A `group_receipt` that rode on a keepalive (`--group-receipts keepalive`): not part of the queue, so no seq and no ts. */
export interface KeptGroupReceipt {
  type: "group_receipt";
  data: GroupReceiptCount & { gid: string; receipts: GroupReceiptCount[] };
}

/**
 * Someone is typing to you (`to`) or in a group (`gid`): emitted when the
 * signal comes (`stopped: false`) and again with `stopped: true` once none
 * came for 5 s. Not part of the queue: no seq, not acked, not replayed.
 */
export interface TypingEvent {
  type: "typing";
  from: string;
  to?: string;
  gid?: string;
  stopped: boolean;
}

export interface EventMap {
  notice: QueueEvent<"notice">;
  msg: QueueEvent<"msg", DirectMessage>;
  group_msg: QueueEvent<"group_msg", GroupMessage>;
  presence: QueueEvent<"presence", { uid: string; status: PresenceStatus }>;
  receipt: QueueEvent<"receipt", { kind: "delivered" | "read"; ids: number[]; by: string }>;
  group_receipt: QueueEvent<"group_receipt", GroupReceiptCount & { gid: string; receipts: GroupReceiptCount[] }> | KeptGroupReceipt;
  counter: QueueEvent<"counter", { name: string; value: number }>;
  broadcast: QueueEvent<"broadcast", { bid: number; body: unknown }>;
  gap: QueueEvent<"gap", GapData>;
  hb: HeartbeatEvent;
  typing: TypingEvent;
  status: StatusEvent;
  resync: ResyncEvent;
}

export type AnyEvent = EventMap[keyof EventMap] | QueueEvent;

/** Live transport statistics (what the demo's compare view draws). */
export interface Summary {
  transport: TransportName | null;
  delivered: number;
  requests: number;
  bytes: number;
  /** Delivery latency percentiles, ms (null before any delivery). */
  p50: number | null;
  p95: number | null;
  requestsPerEvent: number | null;
  usefulRatio: number | null;
}

/** A refused action: `code` is the server's error code (`too_many_requests`, `forbidden`, ...). */
export interface HeraldError extends Error {
  code?: string;
  status: number;
}

export class Herald {
  constructor(options: HeraldOptions);

  /** The position the next request resumes from. */
  readonly cursor: number;
  /** The history the cursor belongs to ("" until the server named it). */
  readonly epoch: string;

  /** Calls `fn` for events of `type` ("*" for every event). */
  on<K extends keyof EventMap>(type: K, fn: (event: EventMap[K]) => void): this;
  on(type: "*", fn: (event: AnyEvent) => void): this;
  /** A custom event type a backend publishes. */
  on(type: string, fn: (event: QueueEvent) => void): this;

  start(): this;
  stop(): void;
  /** `cursor=N&epoch=E`: where to resume, in which history. */
  position(): string;
  summary(): Summary;
  /** Whether this tab holds the shared connection ("leader"), gets events from the tab that does ("follower"), or does not share ("alone"), and how many tabs of this user share it. */
  sharing(): Promise<{ role: "leader" | "follower" | "alone"; tabs: number }>;

  /** Resolves with the message id once it is durable in the recipient's queue. Retried once after a 429's Retry-After; `cid` keeps a retry from sending twice. */
  send(to: string, body: unknown, cid?: string): Promise<{ id: number }>;
  markRead(id: number): Promise<{ read: number[] }>;
  groupSend(gid: string, body: unknown, cid?: string): Promise<{ msgid: number }>;
  /** Batched: sent with the next ack flush (at most once a second). */
  groupRead(gid: string, msgid: number): void;
  /** "I am typing" to a user or a group; call it on every keystroke (sent at most every 2 s per target, never stored). */
  typing(target: string | { gid: string }): Promise<null>;
  /** The direct conversation with `uid`, oldest first: the newest `limit` (1-100, default 50), or those before/after a message id; `more` says the history goes on that way. */
  history(uid: string, window?: { before?: number; after?: number; limit?: number }): Promise<{ with: string; messages: HistoryMessage[]; more: boolean }>;
  groupHistory(gid: string, after?: number): Promise<{ messages: GroupMessage[]; cursor: number }>;
  groupReceipts(gid: string, msgids: number[]): Promise<{ gid: string; receipts: Array<GroupReceiptCount & { readers: string[] }> }>;
  groupPresence(gid: string): Promise<{ gid: string; members: Record<string, PresenceStatus> }>;
  friendsPresence(): Promise<{ friends: Record<string, PresenceStatus> }>;
  setStatus(status: ChosenStatus): Promise<{ status: ChosenStatus }>;
  counters(): Promise<{ counters: Record<string, number> }>;
  /** The day's news on the user's first call of the UTC day that has news, else null. */
  news(): Promise<{ date: string; body: unknown } | null>;
  broadcasts(after?: number): Promise<{ broadcasts: Array<{ bid: number; body: unknown; ts: number }>; cursor: number }>;
}
