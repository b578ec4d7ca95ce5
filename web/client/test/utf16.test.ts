import Delta from "quill-delta";
import { describe, expect, it } from "vitest";

import {
  codePointDiff,
  deltaToScalar,
  deltaToUtf16,
  positionToScalar,
  positionToUtf16,
  scalarLength,
} from "../src/index.js";

// An astral emoji (2 units, 1 scalar), a ZWJ family (3 emoji + 2 ZWJ: 8 units, 5 scalars),
// a flag (2 regional indicators: 4 units, 2 scalars), e + combining acute (2 and 2), and a
// Gothic letter from the astral plane.
const EMOJI = "😀";
const FAMILY = "👨‍👩‍👧";
const FLAG = "🇫🇷";
const COMBINING = "e\u0301";
const GOTHIC = "𐌰";

describe("scalar and UTF-16 counts", () => {
  it("count what the server counts", () => {
    expect(scalarLength(EMOJI)).toBe(1);
    expect(scalarLength(FAMILY)).toBe(5);
    expect(FAMILY.length).toBe(8);
    expect(scalarLength(FLAG)).toBe(2);
    expect(scalarLength(COMBINING)).toBe(2);
    expect(scalarLength(GOTHIC)).toBe(1);
    expect(scalarLength("plain")).toBe(5);
  });

  it("convert retains and deletes against the document, both ways", () => {
    const doc = new Delta().insert(`a${EMOJI}b`).insert({ image: "x.png" }).insert(`${FAMILY}c\n`, { bold: true });
    // Delete the emoji and bold the family: in UTF-16 units...
    const utf16 = new Delta().retain(1).delete(2).retain(2).retain(8, { italic: true });
    const scalar = deltaToScalar(utf16, doc);
    expect(scalar.ops).toEqual([{ retain: 1 }, { delete: 1 }, { retain: 2 }, { retain: 5, attributes: { italic: true } }]);
    expect(deltaToUtf16(scalar, doc).ops).toEqual(utf16.ops);
    // Inserts are carried as they are.
    const ins = new Delta().retain(4).insert(`${FLAG}!`);
    expect(deltaToScalar(ins, doc).ops).toEqual([{ retain: 3 }, { insert: `${FLAG}!` }]);
  });

  it("convert positions", () => {
    const doc = new Delta().insert(`${EMOJI}${EMOJI}abc${GOTHIC}\n`);
    expect(positionToScalar(5, doc)).toBe(3);
    expect(positionToUtf16(3, doc)).toBe(5);
    expect(positionToUtf16(positionToScalar(9, doc), doc)).toBe(9);
    expect(positionToScalar(0, doc)).toBe(0);
  });

  it("refuse to walk past the document", () => {
    expect(() => deltaToScalar(new Delta().retain(10).delete(1), new Delta().insert(`${EMOJI}\n`))).toThrow(RangeError);
  });

  it("leave plain documents alone", () => {
    const d = new Delta().retain(3).delete(2);
    expect(deltaToScalar(d, new Delta().insert("hello\n"))).toBe(d);
  });

  it("diff by code point, never splitting a pair", () => {
    const a = new Delta().insert(`x${EMOJI}y\n`);
    const b = new Delta().insert(`x${"😁"}y\n`); // shares the high surrogate with 😀
    const d = codePointDiff(a, b);
    expect(d.ops).toEqual([{ retain: 1 }, { insert: "😁" }, { delete: 2 }]);
    expect(a.compose(d)).toEqual(b);
    expect(codePointDiff(b, b).ops).toEqual([]);
  });
});
