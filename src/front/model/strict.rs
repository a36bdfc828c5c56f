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
//!
//! Strings are borrowed from the body ([`Text`]) wherever they hold no escapes, so that the
//! model they become copies nothing: the snapshot copies what it keeps, once. The exceptions
//! are rare: a ref's `data` read as JSON (any type but a message or inboxes, or a `data`
//! that comes before its `_meta`) and an app webhook's type and company id are owned.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::marker::PhantomData;

use super::{RefData, WebhookBody};

/// Declares a struct read from a JSON object: each field with its key and one of
/// - `req T`: a `T`, the key must be there;
/// - `opt T`: an `Option<T>`, `None` when the key is missing or `null`;
/// - `present T`: an `Option<Option<T>>`, `None` when the key is missing, `Some(None)` when
///   it is `null`;
/// - `list T`: an `Option<Vec<T>>`, read as `opt`; converted, a missing list is empty;
/// - `or_default T`: an `Option<T>`, read as `opt`; converted, a missing one is the default.
///
/// Unknown keys are [`Validated`] and dropped; a repeated key fails, as in derived code.
///
/// `struct Name<'de> => Name { ... }` also converts it into `super::Name<'de>`, the model's
/// type of the same fields, field by field through `Into`.
macro_rules! object {
    (
        $(#[$attr:meta])*
        struct $name:ident<$lt:lifetime> => $target:ident {
            $( $(#[$field_attr:meta])* $field:ident: $kind:ident $ty:ty = $key:literal, )*
        }
    ) => {
        object! {
            $(#[$attr])*
            struct $name<$lt> {
                $( $(#[$field_attr])* $field: $kind $ty = $key, )*
            }
        }

        impl<$lt> From<$name<$lt>> for super::$target<$lt> {
            fn from(v: $name<$lt>) -> Self {
                Self { $( $field: object!(@into $kind v.$field), )* }
            }
        }
    };
    (
        $(#[$attr:meta])*
        struct $name:ident<$lt:lifetime> {
            $( $(#[$field_attr:meta])* $field:ident: $kind:ident $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[$attr])*
        struct $name<$lt> {
            $( $(#[$field_attr])* $field: object!(@field $kind $ty), )*
        }

        impl<$lt> Deserialize<$lt> for $name<$lt> {
            fn deserialize<D: Deserializer<$lt>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor<$lt>(PhantomData<&$lt ()>);

                impl<$lt> Visitor<$lt> for ObjectVisitor<$lt> {
                    type Value = $name<$lt>;

                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }

                    fn visit_map<A: MapAccess<$lt>>(self, mut map: A) -> Result<$name<$lt>, A::Error> {
                        $( let mut $field: Option<object!(@value $kind $ty)> = None; )*
                        while let Some(key) = map.next_key::<Text<$lt>>()? {
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

                d.deserialize_map(ObjectVisitor(PhantomData))
            }
        }
    };
    (@field req $ty:ty) => { $ty };
    (@field opt $ty:ty) => { Option<$ty> };
    (@field present $ty:ty) => { Option<Option<$ty>> };
    (@field list $ty:ty) => { Option<Vec<$ty>> };
    (@field or_default $ty:ty) => { Option<$ty> };
    (@value req $ty:ty) => { $ty };
    (@value list $ty:ty) => { Option<Vec<$ty>> };
    (@value $kind:ident $ty:ty) => { Option<$ty> };
    (@finish req $field:ident, $key:literal) => {
        $field.ok_or_else(|| de::Error::missing_field($key))?
    };
    (@finish opt $field:ident, $key:literal) => { $field.flatten() };
    (@finish list $field:ident, $key:literal) => { $field.flatten() };
    (@finish or_default $field:ident, $key:literal) => { $field.flatten() };
    (@finish present $field:ident, $key:literal) => { $field };
    (@into req $v:expr) => { $v.into() };
    (@into opt $v:expr) => { $v.map(Into::into) };
    (@into list $v:expr) => { $v.unwrap_or_default().into_iter().map(Into::into).collect() };
    (@into or_default $v:expr) => { $v.map(Into::into).unwrap_or_default() };
}

/// A string (an object key or a value), borrowed from the body unless it holds escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }

        d.deserialize_str(TextVisitor)
    }
}

impl<'de> From<Text<'de>> for Cow<'de, str> {
    fn from(text: Text<'de>) -> Self {
        text.0
    }
}

impl Text<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
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
pub(super) fn parse(body: &[u8]) -> Option<WebhookBody<'_>> {
    // The lenient parser rejects invalid UTF-8 anywhere in the body; checked up front so that
    // no skipped string can hide any.
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<Body<'_>>(text)
        .ok()?
        .into_webhook_body()
}

object! {
    /// A rule webhook (the event itself), an app webhook, or an app webhook's payload: one
    /// type, so the body is read in a single pass before it is known which it is.
    struct Body<'de> {
        id: opt Text<'de> = "id",
        type_: opt Text<'de> = "type",
        emitted_at: opt f64 = "emitted_at",
        source: opt EventRef<'de> = "source",
        target: opt EventRef<'de> = "target",
        conversation: opt Conversation<'de> = "conversation",
        links: opt Links<'de> = "_links",
        /// Either key, even `null`, makes an app webhook.
        authorization: present Authorization<'de> = "authorization",
        payload: present Box<Body<'de>> = "payload",
    }
}

impl<'de> Body<'de> {
    /// The classification `parse_lenient` makes, or `None` wherever it would fail.
    fn into_webhook_body(self) -> Option<WebhookBody<'de>> {
        if self.authorization.is_none() && self.payload.is_none() {
            return self.into_event().map(WebhookBody::Rule);
        }
        let type_ = self.type_.filter(|t| !t.is_empty())?.0.into_owned();
        let company_id = self
            .authorization
            .flatten()
            .and_then(|a| a.id)
            .filter(|id| !id.is_empty())
            .map(|id| id.0.into_owned());
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
    fn into_event(self) -> Option<super::Event<'de>> {
        Some(super::Event {
            id: self.id.filter(|id| !id.is_empty())?.into(),
            type_: self.type_.filter(|t| !t.is_empty())?.into(),
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
struct EventRef<'de>(super::EventRef<'de>);

impl<'de> Deserialize<'de> for EventRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventRefVisitor(PhantomData))
    }
}

struct EventRefVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for EventRefVisitor<'de> {
    type Value = EventRef<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with _meta and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRef<'de>, A::Error> {
        let mut meta: Option<Option<Meta<'de>>> = None;
        let mut data: Option<RefData<'de>> = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
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
                        .map(|m| m.type_.0.as_ref());
                    data = Some(match type_ {
                        Some("message") => match map.next_value::<Option<Message<'de>>>()? {
                            Some(message) => RefData::Message(Box::new(message.into())),
                            None => RefData::Json(Value::Null),
                        },
                        Some("inboxes") => RefData::Inboxes(map.next_value::<Inboxes<'de>>()?.0),
                        _ => RefData::Json(map.next_value()?),
                    });
                }
                _ => {
                    map.next_value::<Validated>()?;
                }
            }
        }
        let meta = meta.flatten().map(super::Meta::from);
        let data = data.map(|data| match data {
            RefData::Json(json) => RefData::read(meta.as_ref(), json),
            typed @ (RefData::Message(_) | RefData::Inboxes(_)) => typed,
        });
        Ok(EventRef(super::EventRef { meta, data }))
    }
}

/// The `data` of an `inboxes` ref: an array of inboxes, a single one (in previews), or null;
/// the inboxes without an id are left out, as [`RefData::read`] does.
struct Inboxes<'de>(Vec<super::InboxRef<'de>>);

impl<'de> Deserialize<'de> for Inboxes<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InboxesVisitor(PhantomData))
    }
}

object! {
    /// An inbox of [`Inboxes`].
    struct Inbox<'de> {
        id: opt Text<'de> = "id",
    }
}

impl<'de> Inbox<'de> {
    fn into_ref(self) -> Option<super::InboxRef<'de>> {
        let id = self.id.filter(|id| !id.is_empty())?.into();
        Some(super::InboxRef { id })
    }
}

struct InboxesVisitor<'de>(PhantomData<&'de ()>);

impl<'de> Visitor<'de> for InboxesVisitor<'de> {
    type Value = Inboxes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of inboxes, an inbox, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Inboxes<'de>, E> {
        Ok(Inboxes(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inboxes<'de>, A::Error> {
        let mut inboxes = Vec::new();
        while let Some(inbox) = seq.next_element::<Inbox<'de>>()? {
            inboxes.extend(inbox.into_ref());
        }
        Ok(Inboxes(inboxes))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Inboxes<'de>, A::Error> {
        let inbox = Inbox::deserialize(MapAccessDeserializer::new(map))?;
        Ok(Inboxes(inbox.into_ref().into_iter().collect()))
    }
}

object! {
    struct Meta<'de> => Meta {
        type_: req Text<'de> = "type",
    }
}

object! {
    struct Authorization<'de> {
        id: opt Text<'de> = "id",
    }
}

object! {
    struct Links<'de> {
        self_: opt Text<'de> = "self",
        /// Null links are dropped only once the object is read: with a repeated key, the
        /// last value wins, null or not, as in the lenient parser's `Value`.
        related: opt BTreeMap<Text<'de>, Option<Text<'de>>> = "related",
    }
}

impl<'de> From<Links<'de>> for super::Links<'de> {
    fn from(links: Links<'de>) -> Self {
        super::Links {
            self_: links.self_.map(Into::into),
            related: links
                .related
                .map(|related| {
                    related
                        .into_iter()
                        .filter_map(|(name, url)| Some((name.into(), url?.into())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

object! {
    struct Conversation<'de> => Conversation {
        id: req Text<'de> = "id",
        subject: opt Text<'de> = "subject",
        status: opt Text<'de> = "status",
        assignee: opt Teammate<'de> = "assignee",
        recipient: opt Recipient<'de> = "recipient",
        tags: list Tag<'de> = "tags",
        created_at: opt f64 = "created_at",
        updated_at: opt f64 = "updated_at",
        is_private: opt bool = "is_private",
        links: or_default Links<'de> = "_links",
    }
}

object! {
    struct Message<'de> => Message {
        id: req Text<'de> = "id",
        type_: opt Text<'de> = "type",
        is_inbound: opt bool = "is_inbound",
        created_at: opt f64 = "created_at",
        subject: opt Text<'de> = "subject",
        blurb: opt Text<'de> = "blurb",
        body: opt Text<'de> = "body",
        text: opt Text<'de> = "text",
        author: opt Teammate<'de> = "author",
        recipients: list Recipient<'de> = "recipients",
        links: or_default Links<'de> = "_links",
    }
}

object! {
    struct Teammate<'de> => Teammate {
        id: req Text<'de> = "id",
        email: opt Text<'de> = "email",
        username: opt Text<'de> = "username",
        first_name: opt Text<'de> = "first_name",
        last_name: opt Text<'de> = "last_name",
    }
}

object! {
    struct Recipient<'de> => Recipient {
        name: opt Text<'de> = "name",
        handle: opt Text<'de> = "handle",
        role: opt Text<'de> = "role",
    }
}

object! {
    struct Tag<'de> => Tag {
        id: opt Text<'de> = "id",
        name: req Text<'de> = "name",
    }
}
