//! What a service knows about a request when it resolves a prompt: the sticky unit key and the
//! request attributes that rollout stages match on.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Request attributes (`user_kind`, `intent`, `geo`, `tenant`, ...), looked up by name.
///
/// Implemented for the containers services already hold, so resolving never needs a copy:
/// `BTreeMap`/`HashMap` of `String`/`&str`, and arrays, slices and `Vec`s of `(key, value)`
/// pairs. In a list of pairs, a key given twice counts with its last value (as a repeated
/// `--attr` does in `pledger resolve`).
pub trait Attributes {
    /// The value of attribute `key`, if the request has it.
    fn attr(&self, key: &str) -> Option<&str>;
}

/// No attributes at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAttributes;

impl Attributes for NoAttributes {
    fn attr(&self, _key: &str) -> Option<&str> {
        None
    }
}

impl<T: Attributes + ?Sized> Attributes for &T {
    fn attr(&self, key: &str) -> Option<&str> {
        (**self).attr(key)
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<str>> Attributes for BTreeMap<K, V> {
    fn attr(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

impl<K: Borrow<str> + Hash + Eq, V: AsRef<str>, S: BuildHasher> Attributes for HashMap<K, V, S> {
    fn attr(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Attributes for [(K, V)] {
    fn attr(&self, key: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Attributes for [(K, V); N] {
    fn attr(&self, key: &str) -> Option<&str> {
        self.as_slice().attr(key)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Attributes for Vec<(K, V)> {
    fn attr(&self, key: &str) -> Option<&str> {
        self.as_slice().attr(key)
    }
}

/// A request as the resolver sees it. Borrowed, so building one costs nothing:
///
/// ```ignore
/// let attrs = [("user_kind", "internal"), ("geo", "eu")];
/// let ctx = RequestContext::new().unit("user-17").attrs(&attrs);
/// let ctx = RequestContext::new().unit(&user_id).attrs(&my_btree_map);
/// ```
#[derive(Clone, Copy)]
pub struct RequestContext<'a> {
    /// The sticky unit key (a user, account or conversation id): the same key gets the same
    /// arm for the whole rollout. Without one, the candidate only serves from a 100% stage.
    pub unit: Option<&'a str>,
    /// The request's attributes, matched against the stages' `match`.
    pub attrs: &'a dyn Attributes,
}

impl<'a> RequestContext<'a> {
    /// No unit key and no attributes.
    pub fn new() -> RequestContext<'a> {
        RequestContext {
            unit: None,
            attrs: &NoAttributes,
        }
    }

    /// Sets the sticky unit key.
    pub fn unit(mut self, unit: &'a str) -> RequestContext<'a> {
        self.unit = Some(unit);
        self
    }

    /// Sets the attributes (any [`Attributes`] container, borrowed).
    pub fn attrs(mut self, attrs: &'a dyn Attributes) -> RequestContext<'a> {
        self.attrs = attrs;
        self
    }
}

impl Default for RequestContext<'_> {
    fn default() -> Self {
        RequestContext::new()
    }
}

impl fmt::Debug for RequestContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}
