// UTF-16 at the edge. Quill and JavaScript strings count UTF-16 code units; Tandem counts
// Unicode scalar values (an astral-plane character such as most emoji is 2 units here and 1
// there; an embed is 1 in both). Inserts carry their text, so only the lengths of retains and
// deletes, and positions, need converting, and those need the document they apply to.

import Delta, { type Op } from "quill-delta";

/** Code units of the first `n` scalar values of `s` (from unit `from`). */
function unitsOfScalars(s: string, from: number, n: number): number {
  let i = from;
  for (let k = 0; k < n; k++) {
    if (i >= s.length) throw new RangeError("position past the end of the text");
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i - from;
}

/** Scalar values in `n` code units of `s` from unit `from`. A split surrogate pair counts as
 *  one scalar on the side that holds its high half. */
function scalarsOfUnits(s: string, from: number, n: number): number {
  let count = 0;
  const end = from + n;
  if (end > s.length) throw new RangeError("position past the end of the text");
  for (let i = from; i < end; i++) {
    if (!(isLow(s.charCodeAt(i)) && i > 0 && isHigh(s.charCodeAt(i - 1)))) count++;
  }
  return count;
}

function isHigh(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/** Scalar values in a string (`[...s].length`, without the array). */
export function scalarLength(s: string): number {
  return scalarsOfUnits(s, 0, s.length);
}

/** True when the string has no astral-plane characters (both counts agree). */
function plain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) return false;
  }
  return true;
}

type Unit = "utf16" | "scalar";

/** Walks a document (a delta of inserts) counting lengths in one unit and the other. */
class DocWalker {
  private op = 0;
  private offset = 0; // in code units within the current text insert

  constructor(private readonly doc: Op[]) {}

  /** Advances `n` of `unit`; returns the same stretch counted in the other unit. */
  advance(n: number, unit: Unit): number {
    let out = 0;
    while (n > 0) {
      const op = this.doc[this.op];
      if (op === undefined) throw new RangeError("the delta spans past the end of the document");
      const insert = op.insert;
      if (typeof insert !== "string") {
        // An embed: 1 in both.
        this.op++;
        this.offset = 0;
        n -= 1;
        out += 1;
        continue;
      }
      const left16 = insert.length - this.offset;
      if (unit === "utf16") {
        const take = Math.min(n, left16);
        out += scalarsOfUnits(insert, this.offset, take);
        this.offset += take;
        n -= take;
      } else {
        const leftScalars = scalarsOfUnits(insert, this.offset, left16);
        const take = Math.min(n, leftScalars);
        const units = unitsOfScalars(insert, this.offset, take);
        out += units;
        this.offset += units;
        n -= take;
      }
      if (this.offset >= insert.length) {
        this.op++;
        this.offset = 0;
      }
    }
    return out;
  }
}

function docOps(doc: Delta | Op[]): Op[] {
  return Array.isArray(doc) ? doc : doc.ops;
}

function allPlain(ops: Op[]): boolean {
  return ops.every((op) => typeof op.insert !== "string" || plain(op.insert));
}

function convert(delta: Delta, doc: Delta | Op[], from: Unit): Delta {
  const ops = docOps(doc);
  if (allPlain(ops)) return delta;
  const walker = new DocWalker(ops);
  const out: Op[] = [];
  for (const op of delta.ops) {
    if (op.insert !== undefined) {
      out.push(op);
    } else if (typeof op.retain === "number") {
      const n = walker.advance(op.retain, from);
      out.push(op.attributes ? { retain: n, attributes: op.attributes } : { retain: n });
    } else if (op.retain !== undefined) {
      // An embed retain (quill-delta 5's retain of an object): one of each.
      walker.advance(1, from);
      out.push(op);
    } else if (op.delete !== undefined) {
      out.push({ delete: walker.advance(op.delete, from) });
    }
  }
  return new Delta(out);
}

/** A delta counted in UTF-16 units, applying to `doc`, counted in scalar values. */
export function deltaToScalar(delta: Delta, doc: Delta | Op[]): Delta {
  return convert(delta, doc, "utf16");
}

/** A delta counted in scalar values (from the server), applying to `doc`, in UTF-16 units. */
export function deltaToUtf16(delta: Delta, doc: Delta | Op[]): Delta {
  return convert(delta, doc, "scalar");
}

/** A position in `doc` in UTF-16 units, as a scalar position. */
export function positionToScalar(pos: number, doc: Delta | Op[]): number {
  const ops = docOps(doc);
  if (pos <= 0 || allPlain(ops)) return Math.max(0, pos);
  return new DocWalker(ops).advance(pos, "utf16");
}

/** A scalar position in `doc`, in UTF-16 units. */
export function positionToUtf16(pos: number, doc: Delta | Op[]): number {
  const ops = docOps(doc);
  if (pos <= 0 || allPlain(ops)) return Math.max(0, pos);
  return new DocWalker(ops).advance(pos, "scalar");
}

/** The change from one document to another, without splitting a character: a common prefix
 *  and suffix by code point and formatting, the middle replaced (quill-delta's `diff` can cut
 *  a surrogate pair in two, which the server refuses). Counted in UTF-16 units. */
export function codePointDiff(oldDoc: Delta, newDoc: Delta): Delta {
  type Piece = { c: string | object; a: string };
  const pieces = (d: Delta): Piece[] =>
    d.ops.flatMap((op): Piece[] =>
      typeof op.insert === "string"
        ? [...op.insert].map((c) => ({ c, a: JSON.stringify(op.attributes ?? {}) }))
        : [{ c: op.insert as object, a: JSON.stringify(op.attributes ?? {}) }],
    );
  const a = pieces(oldDoc);
  const b = pieces(newDoc);
  const same = (x: Piece, y: Piece) =>
    x.a === y.a && (typeof x.c === "string" ? x.c === y.c : JSON.stringify(x.c) === JSON.stringify(y.c));
  let p = 0;
  while (p < a.length && p < b.length && same(a[p]!, b[p]!)) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && same(a[a.length - 1 - s]!, b[b.length - 1 - s]!)) s++;
  const units = (xs: Piece[]) => xs.reduce((n, x) => n + (typeof x.c === "string" ? x.c.length : 1), 0);
  const start = units(b.slice(0, p));
  return new Delta()
    .retain(units(a.slice(0, p)))
    .concat(newDoc.slice(start, start + units(b.slice(p, b.length - s))))
    .delete(units(a.slice(p, a.length - s)))
    .chop();
}
