//! Who is running a query: the database it is scoped to and the role it holds.

use crate::model::{DbId, ROOT_DB};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Server,
    ServerReadOnly,
    Client,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "server" => Role::Server,
            "server-readonly" => Role::ServerReadOnly,
            "client" => Role::Client,
            _ => return None,
        })
    }
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Server => "server",
            Role::ServerReadOnly => "server-readonly",
            Role::Client => "client",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The database the query runs in; refs are relative to it.
    pub db: DbId,
    pub role: Role,
    /// For tokens: the document the token was issued to (`CurrentIdentity()`).
    pub identity: Option<tally_value::Ref>,
    /// For tokens: the token's own ref (`CurrentToken()`).
    pub token: Option<tally_value::Ref>,
}

impl Auth {
    pub fn root_admin() -> Auth {
        Auth::new(ROOT_DB, Role::Admin)
    }

    pub fn new(db: DbId, role: Role) -> Auth {
        Auth { db, role, identity: None, token: None }
    }
}
