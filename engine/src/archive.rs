//! How the delta types archive with rkyv.
//!
//! The archived form is what the binary protocol and the op log carry. Text archives as a
//! plain `ArchivedString`, lengths as little-endian `u64`, and attribute maps and embeds as the
//! UTF-8 bytes of their canonical JSON (sorted keys; empty for no attributes). JSON values are
//! recursive, and a recursive archived type would let a hostile frame nest deep enough to
//! overflow the stack during validation; JSON bytes validate in constant stack and parse under
//! serde_json's depth limit. Formatting is rare and small next to text, so the cost is small.
//!
//! Archived deltas are never deserialized blindly: [`crate::Delta::from_archived`] validates
//! the semantics (lengths, JSON shape) and canonicalizes.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, SerializeWith};
use rkyv::{Archive, Archived, Place, Serialize, SerializeUnsized};

use crate::attributes::Attributes;
use crate::error::Error;
use crate::op::{Embed, Text};
use crate::value::Object;

impl Archive for Text {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedString::resolve_from_str(self.as_str(), resolver, out);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for Text
where
    str: SerializeUnsized<S>,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedString::serialize_from_str(self.as_str(), serializer)
    }
}

/// Archives a JSON object (attributes or an embed) as its canonical JSON bytes.
#[derive(Debug)]
pub struct JsonBytes;

/// Resolver for [`JsonBytes`]: where the bytes went and how many there were.
#[allow(missing_debug_implementations)]
pub struct JsonBytesResolver {
    inner: VecResolver,
    len: usize,
}

fn serialize_json<S>(object: Option<&Object>, serializer: &mut S) -> Result<JsonBytesResolver, S::Error>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    let bytes = match object {
        None => Vec::new(),
        Some(o) => serde_json::to_vec(o).map_err(S::Error::new)?,
    };
    let inner = ArchivedVec::<u8>::serialize_from_slice(&bytes, serializer)?;
    Ok(JsonBytesResolver { inner, len: bytes.len() })
}

impl ArchiveWith<Attributes> for JsonBytes {
    type Archived = ArchivedVec<u8>;
    type Resolver = JsonBytesResolver;

    fn resolve_with(_: &Attributes, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::<u8>::resolve_from_len(resolver.len, resolver.inner, out);
    }
}

impl<S> SerializeWith<Attributes, S> for JsonBytes
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &Attributes, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        serialize_json(field.as_object(), serializer)
    }
}

impl ArchiveWith<Embed> for JsonBytes {
    type Archived = ArchivedVec<u8>;
    type Resolver = JsonBytesResolver;

    fn resolve_with(_: &Embed, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::<u8>::resolve_from_len(resolver.len, resolver.inner, out);
    }
}

impl<S> SerializeWith<Embed, S> for JsonBytes
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &Embed, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        serialize_json(Some(field.as_object()), serializer)
    }
}

/// Reads archived attributes back: empty bytes are no attributes, anything else must be a
/// JSON object.
pub(crate) fn attributes_from_json(bytes: &[u8]) -> Result<Attributes, Error> {
    if bytes.is_empty() {
        return Ok(Attributes::NONE);
    }
    serde_json::from_slice::<Attributes>(bytes).map_err(|e| Error::InvalidDelta(format!("attributes: {e}")))
}

/// Reads an archived embed back: a JSON object.
pub(crate) fn embed_from_json(bytes: &[u8]) -> Result<Embed, Error> {
    serde_json::from_slice::<Object>(bytes).map(Embed::new).map_err(|e| Error::InvalidDelta(format!("embed: {e}")))
}

/// Archives a `usize` length as a little-endian `u64`, whatever the platform's width.
#[derive(Debug)]
pub struct AsU64;

impl ArchiveWith<usize> for AsU64 {
    type Archived = Archived<u64>;
    type Resolver = ();

    fn resolve_with(field: &usize, resolver: Self::Resolver, out: Place<Self::Archived>) {
        (*field as u64).resolve(resolver, out);
    }
}

impl<S: Fallible + ?Sized> SerializeWith<usize, S> for AsU64 {
    fn serialize_with(_: &usize, _: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok(())
    }
}
