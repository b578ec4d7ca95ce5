// The reference side of the differential test: reads cases (JSON) from the file named on the
// command line and prints quill-delta's answers (JSON) on stdout.
//
// Each case: {doc, a, b, c, pos} where doc is a document delta, a and b apply to doc, c applies
// to doc∘a, and pos is a position in doc.
'use strict';
const fs = require('fs');
const Delta = require('quill-delta');

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = cases.map(({ doc, a, b, c, pos }) => {
  const d = new Delta(doc.ops);
  const da = new Delta(a.ops);
  const db = new Delta(b.ops);
  const dc = new Delta(c.ops);
  return {
    compose: da.compose(dc),
    apply: d.compose(da),
    transform_priority: da.transform(db, true),
    transform_no_priority: da.transform(db, false),
    invert: da.invert(d),
    position_priority: da.transformPosition(pos, true),
    position_no_priority: da.transformPosition(pos, false),
    version: require('quill-delta/package.json').version,
  };
});
process.stdout.write(JSON.stringify(out));
