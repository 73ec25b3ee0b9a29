//! Who is running a query: the database it is scoped to, the role it holds, and (for
//! tokens and `@doc` secrets) the identity document it acts as, or (for JWTs of an
//! access provider) the verified login.
//!
//! A role travels inside logged transaction inputs as its wire name ([`Role::name`]) and
//! is parsed back by the executor ([`Role::parse`]); user-defined roles travel by name
//! and are resolved again at the commit ts, so a role changed or deleted between the
//! read-only pass and the executor takes effect deterministically.

use crate::model::{DbId, ROOT_DB};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Server,
    ServerReadOnly,
    /// The built-in `client` role: only what schema marks `public` (legacy permissions).
    Client,
    /// User-defined roles by name (a key with `role: Role("x")` or an array of them,
    /// a function with such a role, a `secret:@role/x` scoped secret). Sorted, deduped.
    Custom(Vec<String>),
    /// A token or a `secret:@doc/coll/id` secret: the identity's baseline rights plus
    /// every role whose `membership` admits the identity document.
    Member,
    /// A JWT issued by an access provider (`Auth::jwt`): the provider's `roles` whose
    /// predicates admit the token's claims, worked out again at the commit ts.
    Jwt,
    /// Role predicates and membership predicates run with this: read-only, same
    /// database, no access to keys, roles, databases or access providers. Never logged.
    Predicate,
}

/// Prefix of the wire name of user-defined roles: `@role/a` or `@role/a/b`.
pub const CUSTOM_PREFIX: &str = "@role/";
const MEMBER_NAME: &str = "@member";
const JWT_NAME: &str = "@jwt";

impl Role {
    /// A built-in role name as it appears in keys and functions.
    pub fn builtin(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "server" => Role::Server,
            "server-readonly" => Role::ServerReadOnly,
            "client" => Role::Client,
            _ => return None,
        })
    }

    /// Parse a wire name produced by [`Role::name`].
    pub fn parse(s: &str) -> Option<Role> {
        if let Some(r) = Role::builtin(s) {
            return Some(r);
        }
        if s == MEMBER_NAME {
            return Some(Role::Member);
        }
        if s == JWT_NAME {
            return Some(Role::Jwt);
        }
        let names = s.strip_prefix(CUSTOM_PREFIX)?;
        let names: Vec<String> = names.split('/').filter(|n| !n.is_empty()).map(str::to_string).collect();
        (!names.is_empty()).then(|| Role::custom(names))
    }

    pub fn custom(mut names: Vec<String>) -> Role {
        names.sort();
        names.dedup();
        Role::Custom(names)
    }

    /// The wire name (role names never contain '/', so the custom form is unambiguous).
    pub fn name(&self) -> String {
        match self {
            Role::Admin => "admin".into(),
            Role::Server => "server".into(),
            Role::ServerReadOnly => "server-readonly".into(),
            Role::Client => "client".into(),
            Role::Custom(names) => format!("{CUSTOM_PREFIX}{}", names.join("/")),
            Role::Member => MEMBER_NAME.into(),
            Role::Jwt => JWT_NAME.into(),
            // Never leaves the evaluator; if it ever did it must grant nothing.
            Role::Predicate => "client".into(),
        }
    }

    /// How a role ranks for assigning roles to functions: a caller may only give a
    /// function a built-in role at or below its own (admin > server > server-readonly
    /// > client). User-defined roles and `admin` need an admin caller.
    pub fn rank(&self) -> u8 {
        match self {
            Role::Admin => 4,
            Role::Server => 3,
            Role::ServerReadOnly => 2,
            Role::Client => 1,
            _ => 0,
        }
    }
}

/// Default scheduling weight of a database or key without `priority`.
pub const PRIORITY_DEFAULT: u32 = 1;
/// Largest `priority` a database or key may have.
pub const PRIORITY_MAX: u32 = 500;

#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    /// The database the query runs in; refs are relative to it.
    pub db: DbId,
    pub role: Role,
    /// For tokens: the document the token was issued to (`CurrentIdentity()`).
    pub identity: Option<tally_value::Ref>,
    /// `CurrentToken()`: for tokens the token's own ref; for a key used unscoped in the
    /// database it lives in, the key's ref (as v4). Test `native_parent() == "tokens"`
    /// to ask "is this a token login".
    pub token: Option<tally_value::Ref>,
    /// For JWTs from an access provider: the verified login (`CurrentIdentity()` is its
    /// `sub` claim, `CurrentToken()` its claims). Logged with the input.
    pub jwt: Option<std::sync::Arc<crate::jwt::JwtLogin>>,
    /// Scheduling weight (1–500): the key's `priority`, else its database's. Not logged:
    /// it only orders admission, never changes a result.
    pub priority: u32,
}

impl Auth {
    pub fn root_admin() -> Auth {
        Auth::new(ROOT_DB, Role::Admin)
    }

    pub fn new(db: DbId, role: Role) -> Auth {
        Auth { db, role, identity: None, token: None, jwt: None, priority: PRIORITY_DEFAULT }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for r in [
            Role::Admin,
            Role::Server,
            Role::ServerReadOnly,
            Role::Client,
            Role::Member,
            Role::Jwt,
            Role::custom(vec!["b".into(), "a".into(), "a".into()]),
        ] {
            assert_eq!(Role::parse(&r.name()), Some(r.clone()), "{r:?}");
        }
        assert_eq!(Role::custom(vec!["b".into(), "a".into()]).name(), "@role/a/b");
        assert_eq!(Role::parse("@role/"), None);
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::builtin("@member"), None);
        assert_eq!(Role::builtin("@jwt"), None);
    }
}
