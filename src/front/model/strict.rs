//! The fast path of [`parse_webhook_body`](super::parse_webhook_body): the body read straight
//! into the model, with no `serde_json::Value` tree in between.
//!
//! The types here mirror the model's with plain fields: a field of an unexpected shape fails
//! the whole parse instead of reading as absent, and the caller then reads the body again with
//! the lenient parser. What the lenient parser reads as absent or default without repairing
//! anything (`null`, a missing field) is read the same way here; whatever it would drop or
//! repair (a tag without a name, a string where an object belongs, a repeated key) fails here.
//! So a body this module accepts reads exactly as the lenient parser would read it, which the
//! tests in `model.rs` check on many variants of real bodies.
//!
//! The structs are declared with `object!` rather than derived, for two differences from
//! serde's derived code: their unknown fields are parsed in full ([`Validated`]) as the lenient
//! parser's `Value` does, where derived code skips them checking only the syntax and would let
//! `{"id":"evt_1","type":"x","junk":1e999}` through while the lenient parser rejects it as not
//! JSON; and they are read from a JSON object only, never from an array of their field values
//! (which the lenient types would read in *their* field order).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{RefData, WebhookBody};

/// Declares a struct read from a JSON object: each field with its key and one of
/// - `req T`: a `T`, the key must be there;
/// - `opt T`: an `Option<T>`, `None` when the key is missing or `null`;
/// - `present T`: an `Option<Option<T>>`, `None` when the key is missing, `Some(None)` when
///   it is `null`.
///
/// Unknown keys are [`Validated`] and dropped; a repeated key fails, as in derived code.
///
/// `struct Name => super::Name { ... }` also converts it into the model's type of the same
/// fields, field by field.
macro_rules! object {
    (
        $(#[$attr:meta])*
        struct $name:ident => $target:path {
            $( $(#[$field_attr:meta])* $field:ident: $kind:ident $ty:ty = $key:literal, )*
        }
    ) => {
        object! {
            $(#[$attr])*
            struct $name {
                $( $(#[$field_attr])* $field: $kind $ty = $key, )*
            }
        }

        impl From<$name> for $target {
            fn from(v: $name) -> Self {
                Self { $( $field: v.$field, )* }
            }
        }
    };
    (
        $(#[$attr:meta])*
        struct $name:ident {
            $( $(#[$field_attr:meta])* $field:ident: $kind:ident $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[$attr])*
        struct $name {
            $( $(#[$field_attr])* $field: object!(@field $kind $ty), )*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;

                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $( let mut $field: Option<object!(@value $kind $ty)> = None; )*
                        while let Some(key) = map.next_key::<Key<'de>>()? {
                            match key.0.as_ref() {
                                $( $key => {
                                    if $field.is_some() {
                                        return Err(de::Error::duplicate_field($key));
                                    }
                                    $field = Some(map.next_value()?);
                                } )*
                                _ => {
                                    map.next_value::<Validated>()?;
                                }
                            }
                        }
                        Ok($name {
                            $( $field: object!(@finish $kind $field, $key), )*
                        })
                    }
                }

                d.deserialize_map(ObjectVisitor)
            }
        }
    };
    (@field req $ty:ty) => { $ty };
    (@field opt $ty:ty) => { Option<$ty> };
    (@field present $ty:ty) => { Option<Option<$ty>> };
    (@value req $ty:ty) => { $ty };
    (@value $kind:ident $ty:ty) => { Option<$ty> };
    (@finish req $field:ident, $key:literal) => {
        $field.ok_or_else(|| de::Error::missing_field($key))?
    };
    (@finish opt $field:ident, $key:literal) => { $field.flatten() };
    (@finish present $field:ident, $key:literal) => { $field };
}

/// An object key, borrowed from the body unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }

        d.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, parsed in full (numbers converted, strings unescaped) and dropped, so
/// that whatever makes the lenient parser's `Value` fail fails here too. Allocates nothing
/// but for strings with escapes.
struct Validated;

impl<'de> Deserialize<'de> for Validated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidatedVisitor)
    }
}

struct ValidatedVisitor;

impl<'de> Visitor<'de> for ValidatedVisitor {
    type Value = Validated;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Validated, E> {
        Ok(Validated)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Validated, A::Error> {
        while seq.next_element::<Validated>()?.is_some() {}
        Ok(Validated)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Validated, A::Error> {
        while map.next_key::<Validated>()?.is_some() {
            map.next_value::<Validated>()?;
        }
        Ok(Validated)
    }
}

/// Reads a webhook body on the fast path; `None` when the lenient parser must decide.
pub(super) fn parse(body: &[u8]) -> Option<WebhookBody> {
    // The lenient parser rejects invalid UTF-8 anywhere in the body; checked up front so that
    // no skipped string can hide any.
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<Body>(text).ok()?.into_webhook_body()
}

object! {
    /// A rule webhook (the event itself), an app webhook, or an app webhook's payload: one
    /// type, so the body is read in a single pass before it is known which it is.
    struct Body {
        id: opt String = "id",
        type_: opt String = "type",
        emitted_at: opt f64 = "emitted_at",
        source: opt EventRef = "source",
        target: opt EventRef = "target",
        conversation: opt Conversation = "conversation",
        links: opt Links = "_links",
        /// Either key, even `null`, makes an app webhook.
        authorization: present Authorization = "authorization",
        payload: present Box<Body> = "payload",
    }
}

impl Body {
    /// The classification `parse_lenient` makes, or `None` wherever it would fail.
    fn into_webhook_body(self) -> Option<WebhookBody> {
        if self.authorization.is_none() && self.payload.is_none() {
            return self.into_event().map(WebhookBody::Rule);
        }
        let type_ = self.type_.filter(|t| !t.is_empty())?;
        let company_id = self
            .authorization
            .flatten()
            .and_then(|a| a.id)
            .filter(|id| !id.is_empty());
        let event = match self.payload.flatten() {
            None => None,
            Some(payload) => Some(payload.into_event()?),
        };
        Some(WebhookBody::App {
            type_,
            company_id,
            event,
        })
    }

    /// The event, when it has the non-empty id and type that `event_from_value` insists on.
    fn into_event(self) -> Option<super::Event> {
        Some(super::Event {
            id: self.id.filter(|id| !id.is_empty())?,
            type_: self.type_.filter(|t| !t.is_empty())?,
            emitted_at: self.emitted_at,
            source: self.source.map(|r| r.0),
            target: self.target.map(|r| r.0),
            conversation: self.conversation.map(Into::into),
            links: self.links.map(Into::into).unwrap_or_default(),
        })
    }
}

/// An [`EventRef`](super::EventRef). A message or inboxes `data` that comes after `_meta` (as
/// Front sends it) is read straight into its type; one that comes first is read as JSON, then
/// converted the way the model converts it.
struct EventRef(super::EventRef);

impl<'de> Deserialize<'de> for EventRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventRefVisitor)
    }
}

struct EventRefVisitor;

impl<'de> Visitor<'de> for EventRefVisitor {
    type Value = EventRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with _meta and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRef, A::Error> {
        let mut meta: Option<Option<Meta>> = None;
        let mut data: Option<RefData> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                "_meta" => {
                    if meta.is_some() {
                        return Err(de::Error::duplicate_field("_meta"));
                    }
                    meta = Some(map.next_value()?);
                }
                "data" => {
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    let type_ = meta
                        .as_ref()
                        .and_then(Option::as_ref)
                        .map(|m| m.type_.as_str());
                    data = Some(match type_ {
                        Some("message") => match map.next_value::<Option<Message>>()? {
                            Some(message) => RefData::Message(Box::new(message.into())),
                            None => RefData::Json(Value::Null),
                        },
                        Some("inboxes") => RefData::Inboxes(map.next_value::<Inboxes>()?.0),
                        _ => RefData::Json(map.next_value()?),
                    });
                }
                _ => {
                    map.next_value::<Validated>()?;
                }
            }
        }
        let meta = meta.flatten().map(|m| super::Meta { type_: m.type_ });
        let data = data.map(|data| match data {
            RefData::Json(json) => RefData::read(meta.as_ref(), json),
            typed @ (RefData::Message(_) | RefData::Inboxes(_)) => typed,
        });
        Ok(EventRef(super::EventRef { meta, data }))
    }
}

/// The `data` of an `inboxes` ref: an array of inboxes, a single one (in previews), or null;
/// the inboxes without an id are left out, as [`RefData::read`] does.
struct Inboxes(Vec<super::InboxRef>);

impl<'de> Deserialize<'de> for Inboxes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InboxesVisitor)
    }
}

object! {
    /// An inbox of [`Inboxes`].
    struct Inbox {
        id: opt String = "id",
    }
}

impl Inbox {
    fn into_ref(self) -> Option<super::InboxRef> {
        let id = self.id.filter(|id| !id.is_empty())?;
        Some(super::InboxRef { id })
    }
}

struct InboxesVisitor;

impl<'de> Visitor<'de> for InboxesVisitor {
    type Value = Inboxes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of inboxes, an inbox, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Inboxes, E> {
        Ok(Inboxes(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inboxes, A::Error> {
        let mut inboxes = Vec::new();
        while let Some(inbox) = seq.next_element::<Inbox>()? {
            inboxes.extend(inbox.into_ref());
        }
        Ok(Inboxes(inboxes))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Inboxes, A::Error> {
        let inbox = Inbox::deserialize(MapAccessDeserializer::new(map))?;
        Ok(Inboxes(inbox.into_ref().into_iter().collect()))
    }
}

object! {
    struct Meta {
        type_: req String = "type",
    }
}

object! {
    struct Authorization {
        id: opt String = "id",
    }
}

object! {
    struct Links {
        self_: opt String = "self",
        /// Null links are dropped only once the object is read: with a repeated key, the
        /// last value wins, null or not, as in the lenient parser's `Value`.
        related: opt BTreeMap<String, Option<String>> = "related",
    }
}

impl From<Links> for super::Links {
    fn from(links: Links) -> Self {
        super::Links {
            self_: links.self_,
            related: links
                .related
                .map(|related| {
                    related
                        .into_iter()
                        .filter_map(|(name, url)| Some((name, url?)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

object! {
    struct Conversation {
        id: req String = "id",
        subject: opt String = "subject",
        status: opt String = "status",
        assignee: opt Teammate = "assignee",
        recipient: opt Recipient = "recipient",
        tags: opt Vec<Tag> = "tags",
        created_at: opt f64 = "created_at",
        updated_at: opt f64 = "updated_at",
        is_private: opt bool = "is_private",
        links: opt Links = "_links",
    }
}

impl From<Conversation> for super::Conversation {
    fn from(c: Conversation) -> Self {
        super::Conversation {
            id: c.id,
            subject: c.subject,
            status: c.status,
            assignee: c.assignee.map(Into::into),
            recipient: c.recipient.map(Into::into),
            tags: c
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            is_private: c.is_private,
            links: c.links.map(Into::into).unwrap_or_default(),
        }
    }
}

object! {
    struct Message {
        id: req String = "id",
        type_: opt String = "type",
        is_inbound: opt bool = "is_inbound",
        created_at: opt f64 = "created_at",
        subject: opt String = "subject",
        blurb: opt String = "blurb",
        body: opt String = "body",
        text: opt String = "text",
        author: opt Teammate = "author",
        recipients: opt Vec<Recipient> = "recipients",
        links: opt Links = "_links",
    }
}

impl From<Message> for super::Message {
    fn from(m: Message) -> Self {
        super::Message {
            id: m.id,
            type_: m.type_,
            is_inbound: m.is_inbound,
            created_at: m.created_at,
            subject: m.subject,
            blurb: m.blurb,
            body: m.body,
            text: m.text,
            author: m.author.map(Into::into),
            recipients: m
                .recipients
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            links: m.links.map(Into::into).unwrap_or_default(),
        }
    }
}

object! {
    struct Teammate => super::Teammate {
        id: req String = "id",
        email: opt String = "email",
        username: opt String = "username",
        first_name: opt String = "first_name",
        last_name: opt String = "last_name",
    }
}

object! {
    struct Recipient => super::Recipient {
        name: opt String = "name",
        handle: opt String = "handle",
        role: opt String = "role",
    }
}

object! {
    struct Tag => super::Tag {
        id: opt String = "id",
        name: req String = "name",
    }
}
