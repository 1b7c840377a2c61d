// What the rendezvous (./rendezvous.ts) and the data plane's receiving side (./peer-link.ts) need of a
// socket: ZeroMQ's multipart messages, one at a time, either over ZeroMQ (./zmq-link.ts: across
// machines, and under --secure) or over Node's own Unix domain sockets (./unix-socket.ts: a world whose
// ranks all sit on one machine, which then never loads the zeromq addon). Types only: importing this
// loads neither.

export type Frame = Buffer | Uint8Array | string;

/** A listening socket: messages from every client that connected, each headed by that client's id. */
export interface MessageServer {
  /** The next message: [client id, ...frames]. Rejects once the socket is closed. */
  receive(): Promise<Buffer[]>;
  /** [client id, ...frames] to that client; a client that is gone drops it. */
  send(frames: Frame[]): Promise<void>;
  /** Where the client with this id connected from, for refusal logs. */
  whereIs(id: Buffer): string;
  /** Stops listening; what was already sent still goes out. */
  close(): void;
  /** close(), and whatever the socket shares with the rest of the process (ZeroMQ's ZAP handler). */
  release(): void;
  readonly closed: boolean;
}

/** A connecting socket; it keeps trying until the server listens. */
export interface MessageClient {
  receive(): Promise<Buffer[]>;
  send(frames: Frame[]): Promise<void>;
  close(): void;
}
