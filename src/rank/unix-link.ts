// A link to a peer on this machine over a Unix socket (./unix-socket.ts, ./peer-link.ts): its goodbyes
// and its liveness (the kernel ends the connection the moment the peer's process is gone, where ZeroMQ
// needed its heartbeats or a reconnect), and its data where shared memory is not available.
import { PeerLink } from './peer-link.js';
import { PIECE } from './peer-link.js';
import { UnixClient } from './unix-socket.js';
import type { Frame } from './message-socket.js';

/** `ipc:///path` (ZeroMQ's spelling of a Unix socket, which the rendezvous's schema takes) to the path. */
export const ipcPath = (ep: string): string => ep.replace(/^ipc:\/\//, '');

/** A message of the data plane: a piece header and at most one piece. */
export const DATA_MESSAGE_BYTES = PIECE + 4096;

export class UnixLink extends PeerLink {
  private c: UnixClient;

  constructor(peer: number, endpoint: string, onDisconnect: (peer: number) => void) {
    super(peer);
    // No retries: the peer listened before the rendezvous, so a refusal means it is gone.
    this.c = new UnixClient(ipcPath(endpoint), { maxMessageBytes: DATA_MESSAGE_BYTES, retry: false, onDisconnect: () => onDisconnect(peer) });
  }

  /** Resolves once connected; rejects when the peer's socket is not there (it is gone). */
  get connected(): Promise<void> { return this.c.connected; }

  protected transmit(frames: Frame[]): Promise<void> { return this.c.send(frames); }

  async close(): Promise<void> {
    await this.drained();
    this.c.close();
  }

  destroy(): void { this.c.close(); }
}
