// Tandem's JavaScript client library. See README.md.

export { TandemClient, DocHandle, NoteError } from "./client.js";
export type { ClientOptions, ConnectionState, DocEvents, SaveState, SocketFactory, SocketLike } from "./client.js";
export { DocSync } from "./doc.js";
export type { Outgoing, Request, RequestMsg, Selection, Submit, ThreadView } from "./doc.js";
export { Notes, transformAnchor, transformScalarPosition } from "./notes.js";
export type { Message, NamedVersion, Note, NoteChange, NotesJson, Thread } from "./notes.js";
export * from "./protocol.js";
export {
  codePointDiff,
  deltaToScalar,
  deltaToUtf16,
  positionToScalar,
  positionToUtf16,
  scalarLength,
} from "./utf16.js";
export { default as Delta } from "quill-delta";
