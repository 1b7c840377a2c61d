// Learns the network address of each incoming connection, so that refusals can say who knocked:
// ZeroMQ hands every new connection of a socket with a security mechanism (PLAIN, CURVE) to the ZAP
// handler with its address, and nothing else reveals it. Clients make their routing id equal to the
// credential ZAP sees (a random PLAIN user name, or their CURVE public key), which ties a ROUTER message
// back to an address. ZAP has one endpoint per ZeroMQ context, so one book serves the whole process,
// shared by the rendezvous and the data sockets of every world in it and ended with its last user.
// Authentication itself is not ZAP's job here: every request is accepted, and the job secret is proven
// by HMAC exchanges above ZeroMQ.
import * as zmq from 'zeromq';
import { randomBytes } from 'node:crypto';

const ZAP_EP = 'inproc://zeromq.zap.01';

class AddressBook {
  private rep = new zmq.Reply();
  readonly addr = new Map<string, string>();
  users = 0;

  async start(): Promise<void> {
    try {
      await this.rep.bind(ZAP_EP);
    } catch {
      this.rep.close(); // someone else in this process answers ZAP; addresses stay unknown
      return;
    }
    void (async () => {
      try {
        for await (const f of this.rep) {
          // [version, request id, domain, address, identity, mechanism, credentials...]
          const mech = f[5]?.toString();
          const cred = mech === 'PLAIN' ? f[6]?.toString() : mech === 'CURVE' && f[6] ? z85(f[6]) : undefined;
          if (cred) this.addr.set(cred, f[3]?.toString() ?? '');
          await this.rep.send([f[0], f[1], '200', 'OK', '', '']);
        }
      } catch { /* closed */ }
    })();
  }

  close(): void {
    this.rep.close();
  }
}

let shared: Promise<AddressBook> | undefined;

export interface AddressBookUse {
  /** The address a client with this routing id connected from, or a phrase saying it is unknown. */
  whereIs(routingId: Buffer): string;
  /** Ends this use; the handler goes with the last one. Only at a world's end: ZeroMQ asks it about
   *  every secured connection of this process, and one closed during a handshake would leave it hanging. */
  release(): void;
}

export async function acquireAddressBook(): Promise<AddressBookUse> {
  const p = (shared ??= (async () => { const b = new AddressBook(); await b.start(); return b; })());
  const book = await p;
  book.users++;
  let released = false;
  return {
    whereIs: (rid) => book.addr.get(rid.toString()) ?? 'an unknown address',
    release() {
      if (released) return;
      released = true;
      if (--book.users === 0 && shared === p) {
        shared = undefined;
        book.close();
      }
    },
  };
}

/** Labels a client socket so that the book can name it: PLAIN with a random user name, or its CURVE key. */
export function labelClient(sock: zmq.Dealer, curve?: { serverPublic: string }): void {
  if (curve) {
    const kp = zmq.curveKeyPair();
    sock.curveServerKey = curve.serverPublic;
    sock.curvePublicKey = kp.publicKey;
    sock.curveSecretKey = kp.secretKey;
    sock.routingId = kp.publicKey;
  } else {
    // PLAIN carries no secret here (the HMAC exchanges do); its user name only labels the connection.
    const user = randomBytes(12).toString('hex');
    sock.plainUsername = user;
    sock.plainPassword = 'tprun';
    sock.routingId = user;
  }
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
function z85(b: Buffer): string {
  let s = '';
  for (let i = 0; i + 4 <= b.length; i += 4) {
    let v = b.readUInt32BE(i);
    const c: string[] = [];
    for (let k = 0; k < 5; k++) { c.unshift(Z85[v % 85]); v = Math.floor(v / 85); }
    s += c.join('');
  }
  return s;
}
