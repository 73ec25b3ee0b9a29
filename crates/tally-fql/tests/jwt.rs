//! JWT logins at the evaluator level: finding the access provider by issuer (in the
//! database the audience names), the roles its `roles` grant a token's claims (plain
//! refs and predicates), `CurrentIdentity()`/`CurrentToken()`, and read-only and write
//! passes deciding alike from the claims alone.

mod common;

use std::sync::Arc;

use common::{coll_ref, Db};
use serde_json::{json, Value as Json};
use tally_fql::auth::{Auth, Role};
use tally_fql::jwt::{audience, authenticate, find_provider, JwtLogin};
use tally_fql::model::ROOT_DB;
use tally_storage::Store;

const ISSUER: &str = "https://idp.example.com/";

/// Collections `notes` (readable by role `reader`) and `secrets` (no role), role
/// `admins` (may create notes) granted by a predicate on the `admin` claim.
fn setup() -> Db {
    let mut db = Db::new();
    db.collection("notes");
    db.collection("secrets");
    db.q(json!({"create": coll_ref("notes", "1"), "params": {"object": {"data": {"object": {"x": 1}}}}}));
    db.q(json!({"create": coll_ref("secrets", "1"), "params": {"object": {"data": {"object": {"x": 2}}}}}));
    db.q(json!({"create_role": {"object": {"name": "reader", "privileges": [{"object": {
        "resource": {"collection": "notes"}, "actions": {"object": {"read": true}}}}]}}}));
    db.q(json!({"create_role": {"object": {"name": "admins", "privileges": [{"object": {
        "resource": {"collection": "notes"}, "actions": {"object": {"read": true, "create": true}}}}]}}}));
    let provider = db.q(json!({"create_access_provider": {"object": {
        "name": "idp",
        "issuer": ISSUER,
        "jwks_uri": "https://idp.example.com/.well-known/jwks.json",
        "roles": [
            {"role": "reader"},
            {"object": {"role": {"role": "admins"}, "predicate": {"query": {"lambda": "claims",
                "expr": {"equals": [{"select": ["admin"], "from": {"var": "claims"}, "default": false}, true]}}}}}
        ]
    }}}));
    assert_eq!(provider["audience"], json!(audience(ROOT_DB)), "{provider}");
    db
}

fn login(claims: Json) -> JwtLogin {
    JwtLogin::new(ROOT_DB, "idp".into(), ISSUER.into(), claims).unwrap()
}

fn auth_of(db: &Db, claims: Json) -> Result<Auth, String> {
    let snap = db.store.snapshot().unwrap();
    authenticate(&*snap, db.ts, login(claims)).map_err(|e| e.code.to_string())
}

#[test]
fn the_provider_is_found_by_issuer_in_its_database() {
    let db = setup();
    let snap = db.store.snapshot().unwrap();
    let found = find_provider(&*snap, db.ts, ROOT_DB, ISSUER).unwrap().unwrap();
    assert_eq!(found.name, "idp");
    assert_eq!(found.jwks_uri, "https://idp.example.com/.well-known/jwks.json");
    assert_eq!(find_provider(&*snap, db.ts, ROOT_DB, "https://evil.example.com/").unwrap(), None, "wrong issuer");
    assert_eq!(find_provider(&*snap, db.ts, 12345, ISSUER).unwrap(), None, "wrong audience (no such database)");
}

#[test]
fn roles_follow_the_providers_roles_and_predicates() {
    let mut db = setup();
    let user = auth_of(&db, json!({"iss": ISSUER, "sub": "user-1"})).unwrap();
    assert_eq!(user.role, Role::Jwt);
    assert!(db.both(&user, json!({"get": coll_ref("notes", "1")})).is_ok());
    assert_eq!(db.both(&user, json!({"get": coll_ref("secrets", "1")})), Err("permission denied".into()));
    let create = json!({"create": {"collection": "notes"}, "params": {"object": {}}});
    assert_eq!(db.both(&user, create.clone()), Err("permission denied".into()));
    let admin = auth_of(&db, json!({"iss": ISSUER, "sub": "boss", "admin": true})).unwrap();
    assert!(db.both(&admin, create).is_ok(), "the predicate admitted the admin claim");
}

#[test]
fn no_applicable_role_is_unauthorized() {
    let mut db = setup();
    db.q(json!({"update": {"access_provider": "idp"}, "params": {"object": {"roles": [
        {"object": {"role": {"role": "admins"}, "predicate": {"query": {"lambda": "c",
            "expr": {"select": ["admin"], "from": {"var": "c"}, "default": false}}}}}
    ]}}}));
    assert_eq!(auth_of(&db, json!({"iss": ISSUER, "sub": "u"})), Err("unauthorized".into()));
    assert!(auth_of(&db, json!({"iss": ISSUER, "sub": "u", "admin": true})).is_ok());
}

#[test]
fn a_provider_changed_after_login_grants_nothing() {
    let mut db = setup();
    let user = auth_of(&db, json!({"iss": ISSUER, "sub": "u"})).unwrap();
    db.q(json!({"update": {"access_provider": "idp"}, "params": {"object": {"issuer": "https://other/"}}}));
    // As the executor would at the commit ts: the issuer moved on, so no role applies.
    assert_eq!(db.both(&user, json!({"get": coll_ref("notes", "1")})), Err("permission denied".into()));
    let mut forged = user.clone();
    forged.jwt = None;
    assert_eq!(db.both(&forged, json!({"get": coll_ref("notes", "1")})), Err("permission denied".into()));
}

#[test]
fn identity_and_token_come_from_the_claims() {
    let mut db = setup();
    let user = auth_of(&db, json!({"iss": ISSUER, "sub": "user-1", "n": 3})).unwrap();
    assert_eq!(db.both(&user, json!({"current_identity": null})), Ok(json!("user-1")));
    assert_eq!(db.both(&user, json!({"has_current_identity": null})), Ok(json!(true)));
    assert_eq!(db.both(&user, json!({"has_current_token": null})), Ok(json!(true)));
    let token = db.both(&user, json!({"current_token": null})).unwrap();
    assert_eq!(token, json!({"iss": ISSUER, "sub": "user-1", "n": 3}));
    assert_eq!(db.both(&user, json!({"logout": false})), Ok(json!(false)), "a JWT cannot be logged out");
    assert_eq!(db.both(&user, json!({"logout": true})), Ok(json!(false)));
    let anonymous = auth_of(&db, json!({"iss": ISSUER})).unwrap();
    assert_eq!(db.both(&anonymous, json!({"current_identity": null})), Err("missing identity".into()));
    assert_eq!(db.both(&anonymous, json!({"has_current_identity": null})), Ok(json!(false)));
}

#[test]
fn claims_are_data_not_fql() {
    let mut db = setup();
    let mut user = auth_of(&db, json!({"iss": ISSUER, "sub": {"@ref": {"id": "1"}}})).unwrap();
    assert_eq!(db.both(&user, json!({"current_identity": null})), Ok(json!({"@obj": {"@ref": {"id": "1"}}})));
    user.jwt = Some(Arc::new(login(json!({"iss": ISSUER, "sub": "x"}))));
    assert_eq!(db.both(&user, json!({"current_identity": null})), Ok(json!("x")));
}

#[test]
fn access_providers_are_validated() {
    let mut db = setup();
    let bad = |db: &mut Db, params: Json| db.err(json!({"create_access_provider": {"object": params}})).code;
    let base = |uri: &str| json!({"name": "p2", "issuer": "i2", "jwks_uri": uri});
    assert_eq!(bad(&mut db, base("http://idp.example.com/jwks")), "validation failed");
    assert_eq!(bad(&mut db, base("ftp://x/")), "validation failed");
    assert_eq!(bad(&mut db, base("https://x/\u{7}")), "validation failed");
    // v4 stored any https-schemed string (faunadb-python's own tests write "https: //…");
    // one Tally cannot fetch fails the login instead.
    let loose = json!({"name": "p3", "issuer": "i3", "jwks_uri": "https: //$abcd.auth0.com"});
    db.q(json!({"create_access_provider": {"object": loose}}));
    let mut p = base("https://x/");
    p["roles"] = json!([{"object": {"role": {"role": "reader"}, "predicate": true}}]);
    assert_eq!(bad(&mut db, p), "validation failed", "a predicate must be a lambda");
    let mut p = base("https://x/");
    p["issuer"] = json!(ISSUER);
    assert_eq!(bad(&mut db, p), "validation failed", "issuers are unique");
    let ok = db.q(json!({"create_access_provider": {"object": base("http://127.0.0.1:9/jwks")}}));
    assert_eq!(ok["audience"], json!(audience(ROOT_DB)));
    // The audience is derived: a caller cannot set it.
    let upd = db.q(json!({"update": {"access_provider": "p2"}, "params": {"object": {"audience": "x"}}}));
    assert_eq!(upd["audience"], json!(audience(ROOT_DB)));
}
