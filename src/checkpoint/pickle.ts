// A pickle reader for torch.save state dicts. It never runs code: globals become inert references, and
// only the few torch / collections callables a state dict needs are interpreted (tensor rebuild,
// OrderedDict, Parameter). Storages are persistent ids resolved by the caller.
import { InputError } from '../core/errors.js';

export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualname(): string { return `${this.module}.${this.name}`; }
}

/** Result of calling a global we do not interpret. */
export class PyObject {
  state: unknown;
  constructor(readonly cls: PyGlobal, readonly args: unknown[]) {}
}

export interface TensorRef {
  kind: 'tensor';
  storage: unknown;
  storageOffset: number;
  shape: number[];
  stride: number[];
}

const MARK = Symbol('mark');

export function isTensorRef(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
}

/** Unpickles `buf`; `persistentLoad` maps persistent ids (torch storages) to values. */
export function unpickle(buf: Uint8Array, file: string, persistentLoad: (pid: unknown) => unknown): unknown {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  const fail = (msg: string): never => { throw new InputError(`${file}: malformed pickle at byte ${pos}: ${msg}`); };
  const need = (n: number) => { if (pos + n > buf.length) fail('unexpected end'); };
  const u8 = () => { need(1); return buf[pos++]; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const u64 = () => { need(8); const v = Number(dv.getBigUint64(pos, true)); pos += 8; return v; };
  const bytes = (n: number) => { need(n); const v = buf.subarray(pos, pos + n); pos += n; return v; };
  const str = (n: number) => new TextDecoder().decode(bytes(n));
  const line = () => { const e = buf.indexOf(0x0a, pos); if (e < 0) fail('unterminated line'); const s = new TextDecoder().decode(buf.subarray(pos, e)); pos = e + 1; return s; };
  const pop = () => { if (!stack.length) fail('stack underflow'); return stack.pop(); };
  const top = () => { if (!stack.length) fail('stack underflow'); return stack[stack.length - 1]; };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('no mark');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const setItem = (d: unknown, k: unknown, v: unknown) => {
    if (d instanceof Map) d.set(k, v);
    else if (d instanceof PyObject) { if (!(d.state instanceof Map)) d.state = new Map(); (d.state as Map<unknown, unknown>).set(k, v); }
    else fail('SETITEM on a non-dict');
  };
  const call = (f: unknown, args: unknown): unknown => {
    if (!(f instanceof PyGlobal)) return fail('REDUCE of a non-callable');
    if (!Array.isArray(args)) return fail('REDUCE arguments are not a tuple');
    switch (f.qualname) {
      case 'torch._utils._rebuild_tensor_v2':
      case 'torch._utils._rebuild_tensor': {
        const [storage, off, shape, stride] = args;
        if (typeof off !== 'number' || !Array.isArray(shape) || !Array.isArray(stride)) fail('bad _rebuild_tensor arguments');
        return { kind: 'tensor', storage, storageOffset: off, shape: shape as number[], stride: stride as number[] } satisfies TensorRef;
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state':
        return args[0];
      case 'collections.OrderedDict':
      case 'builtins.dict':
        return new Map();
      default:
        return new PyObject(f, args);
    }
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO
      case 0x95: u64(); break; // FRAME
      case 0x2e: return pop(); // STOP
      case 0x28: stack.push(MARK); break;
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x8f: stack.push([]); break; // EMPTY_SET
      case 0x64: { const it = popMark(); const d = new Map(); for (let i = 0; i + 1 < it.length; i += 2) d.set(it[i], it[i + 1]); stack.push(d); break; } // DICT
      case 0x6c: case 0x74: stack.push(popMark()); break; // LIST, TUPLE
      case 0x85: stack.push([pop()]); break;
      case 0x86: { const b = pop(); const a = pop(); stack.push([a, b]); break; }
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push([a, b, c]); break; }
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x70: memo.set(Number(line()), top()); break; // PUT
      case 0x68: case 0x6a: case 0x67: { // BINGET, LONG_BINGET, GET
        const k = op === 0x68 ? u8() : op === 0x6a ? u32() : Number(line());
        if (!memo.has(k)) fail(`memo ${k} missing`);
        stack.push(memo.get(k));
        break;
      }
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: case 0x8b: { // LONG1, LONG4
        const n = op === 0x8a ? u8() : u32();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(Number(v));
        break;
      }
      case 0x49: { const s = line(); stack.push(s === '01' ? true : s === '00' ? false : Number(s)); break; } // INT
      case 0x4c: stack.push(Number(line().replace(/L$/, ''))); break; // LONG
      case 0x47: { need(8); stack.push(dv.getFloat64(pos, false)); pos += 8; break; } // BINFLOAT
      case 0x4e: stack.push(null); break;
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x58: stack.push(str(u32())); break; // BINUNICODE
      case 0x8c: stack.push(str(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(u64())); break; // BINUNICODE8
      case 0x54: stack.push(str(u32())); break; // BINSTRING
      case 0x55: stack.push(str(u8())); break; // SHORT_BINSTRING
      case 0x42: stack.push(bytes(u32())); break; // BINBYTES
      case 0x43: stack.push(bytes(u8())); break; // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64())); break; // BINBYTES8
      case 0x63: { const m = line(); const n = line(); stack.push(new PyGlobal(m, n)); break; } // GLOBAL
      case 0x93: { const n = pop(); const m = pop(); stack.push(new PyGlobal(String(m), String(n))); break; } // STACK_GLOBAL
      case 0x52: { const a = pop(); const f = pop(); stack.push(call(f, a)); break; } // REDUCE
      case 0x81: { const a = pop(); const c = pop(); stack.push(call(c, a)); break; } // NEWOBJ
      case 0x92: { pop(); const a = pop(); const c = pop(); stack.push(call(c, a)); break; } // NEWOBJ_EX
      case 0x62: { const s = pop(); const o = top(); if (o instanceof PyObject) o.state = s; break; } // BUILD
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      case 0x50: stack.push(persistentLoad(line())); break; // PERSID
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l)) fail('APPEND to a non-list'); (l as unknown[]).push(v); break; }
      case 0x65: { const it = popMark(); const l = top(); if (!Array.isArray(l)) fail('APPENDS to a non-list'); (l as unknown[]).push(...it); break; }
      case 0x90: { const it = popMark(); const l = top(); if (Array.isArray(l)) l.push(...it); break; } // ADDITEMS
      case 0x91: stack.push(popMark()); break; // FROZENSET
      case 0x73: { const v = pop(); const k = pop(); setItem(top(), k, v); break; } // SETITEM
      case 0x75: { const it = popMark(); const d = top(); for (let i = 0; i + 1 < it.length; i += 2) setItem(d, it[i], it[i + 1]); break; } // SETITEMS
      default: fail(`unsupported opcode 0x${op.toString(16)}`);
    }
  }
}
