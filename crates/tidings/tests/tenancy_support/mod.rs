//! What the tenancy tests stand on: Tidings in-process ([`Tidings`]: the real
//! `startup::build` and API router, called with `oneshot`, with no dispatcher or mailer
//! unless a test starts them, so nothing changes behind the test's back), a model of the
//! hierarchy ([`Tree`]) that says, independently of the server, who should see what, and a
//! [`Snapshot`] of everything stored, to prove that a refused request changed nothing.

#![allow(dead_code)] // each test uses a different part of this module

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::Row;
use tempfile::TempDir;
use tidings::api::AppState;
use tidings::config::Settings;
use tidings::delivery::Dispatcher;
use tidings::notify::Mailer;
use tidings::startup::{build, App};
use tower::ServiceExt;

/// The operator key every test's Tidings is started with (`TIDINGS_ADMIN_KEY`).
pub const OPERATOR_KEY: &str = "tenancy-operator-key-0123456789";

// ---------------------------------------------------------------------------------------------
// Tidings in-process

/// An HTTP answer: status, headers, and the body as JSON (a JSON string when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of an error answer, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// Tidings wired as `serve` wires it, on a SQLite file in a temporary directory.
pub struct Tidings {
    pub state: AppState,
    router: Router,
    /// A read-only connection to the database file, for snapshots.
    reader: tokio::sync::OnceCell<SqlitePool>,
    dir: TempDir,
}

/// The parts of `serve` that run in the background; a test starts them only when it needs
/// deliveries or e-mails.
pub struct Background {
    pub dispatcher: Dispatcher,
    pub mailer: Mailer,
}

impl Tidings {
    /// Default settings except: a fresh database and key file, [`OPERATOR_KEY`], and no
    /// SSRF exemptions (a delivery attempt, if any were made, fails at connect time).
    pub async fn start_with(change: impl FnOnce(&mut Settings)) -> (Tidings, Background) {
        Tidings::start_on_clock(change, tidings::clock::SystemClock).await
    }

    /// [`Tidings::start_with`] on `clock`.
    pub async fn start_on_clock(
        change: impl FnOnce(&mut Settings),
        clock: impl tidings::clock::Clock,
    ) -> (Tidings, Background) {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            database_url: format!("sqlite://{}", dir.path().join("tidings.db").display()),
            admin_key: Some(OPERATOR_KEY.to_owned()),
            ssrf_allow: String::new(),
            secret_key_file: dir.path().join("tidings.key"),
            ..Settings::default()
        };
        change(&mut settings);
        let clock = std::sync::Arc::new(clock);
        let App {
            state,
            dispatcher,
            mailer,
            ..
        } = build(&settings, clock).await.unwrap();
        let tidings = Tidings {
            router: tidings::api::router(state.clone()),
            state,
            reader: tokio::sync::OnceCell::new(),
            dir,
        };
        (tidings, Background { dispatcher, mailer })
    }

    /// Tidings with nothing running in the background.
    pub async fn start() -> Tidings {
        Tidings::start_with(|_| {}).await.0
    }

    /// Calls the API with `key` (None: no `Authorization` header) and a raw body.
    pub async fn raw(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request.body(Body::from(body)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Calls the API with `key` and an optional JSON body.
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let bytes = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
        self.raw(Some(key), method, path, bytes).await
    }

    /// A GET with the operator key that must answer 200.
    pub async fn op_get(&self, path: &str) -> Value {
        let a = self.call(OPERATOR_KEY, Method::GET, path, None).await;
        assert_eq!(a.status, StatusCode::OK, "GET {path}: {}", a.body);
        a.body
    }

    /// A POST with the operator key that must answer 201; answers the body.
    pub async fn op_post(&self, path: &str, body: Value) -> Value {
        let a = self
            .call(OPERATOR_KEY, Method::POST, path, Some(&body))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "POST {path} {body}: {}",
            a.body
        );
        a.body
    }

    /// Makes a key bound to one level; answers its id and the key itself.
    pub async fn key_for(&self, level: Kind, id: &str) -> (String, String) {
        let body =
            json!({"level": level.level().unwrap(), "id": id, "label": format!("{level:?} key")});
        let made = self.op_post("/v1/api-keys", body).await;
        let key = made["key"].as_str().expect("the key, once").to_owned();
        (made["id"].as_str().unwrap().to_owned(), key)
    }

    /// Everything stored: every entity as the operator's API shows it, and every database
    /// row (webhooks, attempts, events, sealed secrets, keys, e-mails, references).
    pub async fn snapshot(&self) -> Snapshot {
        let mut api = BTreeMap::new();
        for kind in Kind::ALL {
            let path = format!("/v1/{}?limit=1000", kind.collection());
            api.insert(path.clone(), self.op_get(&path).await);
        }
        Snapshot {
            api,
            database: self.dump().await,
        }
    }

    /// Every row of every table, each as its columns' SQL literals.
    async fn dump(&self) -> BTreeMap<String, Vec<String>> {
        let pool = self
            .reader
            .get_or_init(|| async {
                let options = SqliteConnectOptions::new()
                    .filename(self.dir.path().join("tidings.db"))
                    .read_only(true);
                SqlitePool::connect_with(options).await.unwrap()
            })
            .await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut out = BTreeMap::new();
        for table in tables {
            let columns: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
            let row = columns
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT {row} FROM \"{table}\" ORDER BY 1"))
                    .fetch_all(pool)
                    .await
                    .unwrap();
            out.insert(table, rows);
        }
        out
    }
}

/// All that is stored: the operator's view of every collection and every database row.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub api: BTreeMap<String, Value>,
    pub database: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// What differs between two snapshots, for a failure message.
    pub fn diff(&self, after: &Snapshot) -> String {
        let mut out = String::new();
        for (path, before) in &self.api {
            if after.api.get(path) != Some(before) {
                out.push_str(&format!("API {path} changed\n"));
            }
        }
        for (table, before) in &self.database {
            let after = after.database.get(table).cloned().unwrap_or_default();
            if &after != before {
                let gone: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
                let new: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
                out.push_str(&format!("table {table}: gone {gone:?}, new {new:?}\n"));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The model: what exists and who should see it

/// The entity kinds, in the order their collections are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Reseller,
    Dealer,
    Company,
    Site,
    User,
    Meeting,
    Package,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Reseller,
        Kind::Dealer,
        Kind::Company,
        Kind::Site,
        Kind::User,
        Kind::Meeting,
        Kind::Package,
    ];
    pub const LEVELS: [Kind; 4] = [Kind::Reseller, Kind::Dealer, Kind::Company, Kind::Site];

    pub fn collection(self) -> &'static str {
        match self {
            Kind::Reseller => "resellers",
            Kind::Dealer => "dealers",
            Kind::Company => "companies",
            Kind::Site => "sites",
            Kind::User => "users",
            Kind::Meeting => "meetings",
            Kind::Package => "packages",
        }
    }

    /// The level name (`reseller`, ...) of the four kinds that are levels.
    pub fn level(self) -> Option<&'static str> {
        match self {
            Kind::Reseller => Some("reseller"),
            Kind::Dealer => Some("dealer"),
            Kind::Company => Some("company"),
            Kind::Site => Some("site"),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.collection())
    }
}

/// One entity as the model knows it.
#[derive(Debug, Clone)]
pub struct Node {
    /// A short name for messages (`A1`, `C1a`, `S1a1`, ...).
    pub label: String,
    pub kind: Kind,
    pub id: String,
    /// The next entity up its chain: parent level, a user's owner, a personal meeting's
    /// site, a direct meeting's company. Visibility follows this chain.
    pub up: Option<String>,
    /// Every reference it makes: the field that names it (`company.id`, `sites[0].id`, ...)
    /// and the id. An entity referred to cannot be deleted.
    pub links: Vec<(String, String)>,
}

impl Node {
    /// The id a field names, if it names one.
    pub fn link(&self, field: &str) -> Option<&str> {
        self.links
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, id)| id.as_str())
    }

    /// Points `field` at `id`.
    pub fn relink(&mut self, field: &str, id: &str) {
        for (f, target) in &mut self.links {
            if f == field {
                *target = id.to_owned();
            }
        }
    }
}

/// Who sends a request: the operator key or a key bound to one level.
#[derive(Debug, Clone)]
pub enum Who {
    Operator,
    Tenant {
        level: Kind,
        id: String,
        key: String,
    },
}

impl Who {
    pub fn key(&self) -> &str {
        match self {
            Who::Operator => OPERATOR_KEY,
            Who::Tenant { key, .. } => key,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Who::Operator => "operator".into(),
            Who::Tenant { level, .. } => format!("{} key", level.level().unwrap()),
        }
    }
}

/// Where an object lies relative to a key's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// The key's own level.
    Own,
    /// Strictly below the key's level.
    Below,
    /// Outside the key's subtree and not above it: a sibling level and its subtree, the
    /// other reseller's tree, users owned by a level above.
    Sibling,
    /// A level above the key's (for a reseller's creation: the root).
    Above,
    /// The package catalogue, which every key reads.
    Catalogue,
    /// Anything, for the operator key.
    Operator,
}

/// The hierarchy as the test built and changed it.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn add(&mut self, node: Node) {
        self.nodes.push(node);
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the model"))
    }

    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    pub fn by_label(&self, label: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.label == label)
            .unwrap_or_else(|| panic!("no node labelled {label}"))
    }

    pub fn id(&self, label: &str) -> String {
        self.by_label(label).id.clone()
    }

    pub fn label(&self, id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_owned(), |n| n.label.clone())
    }

    pub fn of_kind(&self, kind: Kind) -> Vec<Node> {
        self.nodes
            .iter()
            .filter(|n| n.kind == kind)
            .cloned()
            .collect()
    }

    pub fn remove(&mut self, id: &str) {
        self.nodes.retain(|n| n.id != id);
    }

    /// The entities above `id`, nearest first.
    pub fn chain(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = self.node(id).up.clone();
        while let Some(up) = next {
            next = self.node(&up).up.clone();
            out.push(up);
        }
        out
    }

    pub fn position(&self, who: &Who, id: &str) -> Position {
        let Who::Tenant { id: own, .. } = who else {
            return Position::Operator;
        };
        if self.node(id).kind == Kind::Package {
            Position::Catalogue
        } else if id == own {
            Position::Own
        } else if self.chain(id).contains(own) {
            Position::Below
        } else if self.chain(own).iter().any(|a| a == id) {
            Position::Above
        } else {
            Position::Sibling
        }
    }

    /// Whether `who` may see (read, and name as a reference) the entity `id`.
    pub fn sees(&self, who: &Who, id: &str) -> bool {
        matches!(
            self.position(who, id),
            Position::Own | Position::Below | Position::Catalogue | Position::Operator
        )
    }

    /// Whether anything still refers to `id`.
    pub fn referred_to(&self, id: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.links.iter().any(|(_, r)| r == id))
    }

    /// The first reference of `node` that disagrees with the others, as the server checks
    /// a user or meeting it writes: a user's sites lie under its owner; a personal meeting's
    /// site belongs to its company, and its creator to that company or a level above.
    pub fn inconsistency(&self, node: &Node) -> Option<String> {
        match node.kind {
            Kind::User => {
                let owner = node.link("entity.id")?;
                node.links
                    .iter()
                    .filter(|(f, _)| f.starts_with("sites["))
                    .find(|(_, site)| !self.chain(site).iter().any(|a| a == owner))
                    .map(|(f, _)| f.clone())
            }
            Kind::Meeting => {
                let company = node.link("company.id")?;
                if let Some(site) = node.link("site.id") {
                    if self.node(site).up.as_deref() != Some(company) {
                        return Some("site.id".into());
                    }
                }
                let creator = node.link("created_by.id")?;
                let owner = self.node(creator).up.clone().unwrap();
                let mut allowed = self.chain(company);
                allowed.push(company.to_owned());
                (!allowed.contains(&owner)).then(|| "created_by.id".into())
            }
            _ => None,
        }
    }

    /// Every user and meeting that [`Tree::inconsistency`] finds fault with, by label.
    pub fn inconsistent(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| self.inconsistency(n).map(|f| format!("{} {f}", n.label)))
            .collect()
    }

    /// The ids of `kind` that `who` should see, in any order.
    pub fn visible(&self, who: &Who, kind: Kind) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| n.kind == kind && self.sees(who, &n.id))
            .map(|n| n.id.clone())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies in the seed's shape

pub fn contact(name: &str) -> Value {
    json!({"first_name": name, "last_name": "Contact", "email": format!("{}@contact.example", name.to_lowercase())})
}

/// Where the standard tree's levels send their webhooks (never reached: no test that uses
/// these URLs runs a dispatcher).
pub const HOOKS: &str = "https://hooks.example";

pub fn level_body(kind: Kind, label: &str, parent: Option<&str>) -> Value {
    level_body_at(HOOKS, kind, label, parent)
}

/// A level's body whose `webhook_url` is `{base}/{label}`.
pub fn level_body_at(base: &str, kind: Kind, label: &str, parent: Option<&str>) -> Value {
    let mut body = json!({
        "name": label,
        "webhook_url": format!("{base}/{label}"),
        "notification_contact": {"email": format!("ops@{}.example", label.to_lowercase())},
    });
    match kind {
        Kind::Reseller => {}
        Kind::Dealer => body["reseller"] = json!({"id": parent.unwrap()}),
        Kind::Company => body["dealer"] = json!({"id": parent.unwrap()}),
        Kind::Site => body["company"] = json!({"id": parent.unwrap()}),
        _ => unreachable!("{kind} is not a level"),
    }
    if kind != Kind::Site {
        body["contact"] = contact(label);
    }
    body
}

pub fn user_body(label: &str, owner: Kind, owner_id: &str, sites: &[String]) -> Value {
    json!({
        "first_name": label,
        "last_name": "User",
        "email": format!("{}@users.example", label.to_lowercase()),
        "entity": {"type": owner.level().unwrap(), "id": owner_id},
        "sites": sites.iter().map(|s| json!({"id": s})).collect::<Vec<_>>(),
    })
}

pub fn meeting_body(label: &str, company: &str, site: Option<&str>, created_by: &str) -> Value {
    let mut body = json!({
        "company": {"id": company},
        "created_by": {"id": created_by},
        "subject": label,
        "participants": [{"user": created_by}, {"name": "Visitor", "email": "visitor@guests.example"}],
    });
    if let Some(site) = site {
        body["site"] = json!({"id": site});
    }
    body
}

/// The references a body of `kind` makes, in the order the server checks them, each with
/// the field that names it.
pub fn references(kind: Kind, body: &Value) -> Vec<(String, String)> {
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let mut out = Vec::new();
    match kind {
        Kind::Dealer => out.push(("reseller.id".into(), id(&body["reseller"]))),
        Kind::Company => {
            out.push(("dealer.id".into(), id(&body["dealer"])));
            if body.get("package").is_some() {
                out.push(("package.id".into(), id(&body["package"])));
            }
        }
        Kind::Site => out.push(("company.id".into(), id(&body["company"]))),
        Kind::User => {
            out.push(("entity.id".into(), id(&body["entity"])));
            for (n, s) in body["sites"].as_array().unwrap().iter().enumerate() {
                out.push((format!("sites[{n}].id"), id(s)));
            }
        }
        Kind::Meeting => {
            out.push(("company.id".into(), id(&body["company"])));
            out.push(("created_by.id".into(), id(&body["created_by"])));
            if body.get("site").is_some() {
                out.push(("site.id".into(), id(&body["site"])));
            }
            for (n, p) in body["participants"].as_array().unwrap().iter().enumerate() {
                if let Some(u) = p["user"].as_str() {
                    out.push((format!("participants[{n}].user"), u.to_owned()));
                }
            }
        }
        Kind::Reseller | Kind::Package => {}
    }
    out
}

/// The model node for a body the server accepted as `id`.
pub fn node_for(kind: Kind, label: &str, id: &str, body: &Value) -> Node {
    let links = references(kind, body);
    let up = match kind {
        Kind::Reseller | Kind::Package => None,
        Kind::Meeting => Some(body.get("site").map_or_else(
            || links[0].1.clone(),
            |s| s["id"].as_str().unwrap().to_owned(),
        )),
        _ => Some(links[0].1.clone()),
    };
    Node {
        label: label.to_owned(),
        kind,
        id: id.to_owned(),
        up,
        links,
    }
}

/// Creates an entity with the operator key and records it in the model.
pub async fn create(t: &Tidings, tree: &mut Tree, kind: Kind, label: &str, body: Value) -> String {
    let made = t
        .op_post(&format!("/v1/{}", kind.collection()), body.clone())
        .await;
    let id = made["id"].as_str().unwrap().to_owned();
    tree.add(node_for(kind, label, &id, &body));
    id
}

/// The standard tree, every level with a `webhook_url` (so webhooks exist at every level):
///
/// ```text
/// RA ─ A1 ─ C1a ─ S1a1, S1a2      users U1a (C1a; S1a1, S1a2), UA1 (dealer A1), URA (reseller RA)
///    │    └ C1b ─ S1b1, S1b2      user  U1b (C1b; S1b1)
///    └ A2 ─ C2a ─ S2a1            user  U2a (C2a; S2a1)
/// RB ─ B1 ─ CB  ─ SB1             user  UB  (CB; SB1)
/// package P (C1a has it)
/// meetings: M1a-p (personal, S1a1), M1a-d (direct, C1a), M1b-p (S1b1), M2a-d (C2a), MB-p (SB1)
/// ```
pub async fn build_tree(t: &Tidings) -> Tree {
    build_tree_at(t, HOOKS).await
}

/// The standard tree with webhook URLs under `base`.
pub async fn build_tree_at(t: &Tidings, base: &str) -> Tree {
    let mut tree = Tree::default();
    let p = create(
        t,
        &mut tree,
        Kind::Package,
        "P",
        json!({"name": "P", "features": ["video"]}),
    )
    .await;
    for r in ["RA", "RB"] {
        create(
            t,
            &mut tree,
            Kind::Reseller,
            r,
            level_body_at(base, Kind::Reseller, r, None),
        )
        .await;
    }
    for (d, r) in [("A1", "RA"), ("A2", "RA"), ("B1", "RB")] {
        let parent = tree.id(r);
        create(
            t,
            &mut tree,
            Kind::Dealer,
            d,
            level_body_at(base, Kind::Dealer, d, Some(&parent)),
        )
        .await;
    }
    for (c, d) in [("C1a", "A1"), ("C1b", "A1"), ("C2a", "A2"), ("CB", "B1")] {
        let parent = tree.id(d);
        let mut body = level_body_at(base, Kind::Company, c, Some(&parent));
        if c == "C1a" {
            body["package"] = json!({"id": p});
        }
        create(t, &mut tree, Kind::Company, c, body).await;
    }
    for (s, c) in [
        ("S1a1", "C1a"),
        ("S1a2", "C1a"),
        ("S1b1", "C1b"),
        ("S1b2", "C1b"),
        ("S2a1", "C2a"),
        ("SB1", "CB"),
    ] {
        let parent = tree.id(c);
        create(
            t,
            &mut tree,
            Kind::Site,
            s,
            level_body_at(base, Kind::Site, s, Some(&parent)),
        )
        .await;
    }
    for (u, owner, sites) in [
        ("U1a", "C1a", vec!["S1a1", "S1a2"]),
        ("U1b", "C1b", vec!["S1b1"]),
        ("UA1", "A1", vec![]),
        ("URA", "RA", vec![]),
        ("U2a", "C2a", vec!["S2a1"]),
        ("UB", "CB", vec!["SB1"]),
    ] {
        let owner = tree.by_label(owner).clone();
        let sites: Vec<String> = sites.iter().map(|s| tree.id(s)).collect();
        let body = user_body(u, owner.kind, &owner.id, &sites);
        create(t, &mut tree, Kind::User, u, body).await;
    }
    for (m, company, site, creator) in [
        ("M1a-p", "C1a", Some("S1a1"), "U1a"),
        ("M1a-d", "C1a", None, "U1a"),
        ("M1b-p", "C1b", Some("S1b1"), "U1b"),
        ("M2a-d", "C2a", None, "U2a"),
        ("MB-p", "CB", Some("SB1"), "UB"),
    ] {
        let site = site.map(|s| tree.id(s));
        let body = meeting_body(m, &tree.id(company), site.as_deref(), &tree.id(creator));
        create(t, &mut tree, Kind::Meeting, m, body).await;
    }
    tree
}

// ---------------------------------------------------------------------------------------------
// Counting what the matrix covered

/// How many cases ran per resource, method, key level, position and outcome.
#[derive(Debug, Default)]
pub struct Tally {
    pub cells: BTreeMap<(String, String, Position, bool), u32>,
}

impl Tally {
    pub fn add(&mut self, resource: &str, method: &str, position: Position, allowed: bool) {
        *self
            .cells
            .entry((resource.to_owned(), method.to_owned(), position, allowed))
            .or_default() += 1;
    }

    pub fn cases(&self) -> u32 {
        self.cells.values().sum()
    }

    /// One line per resource and method: the counts per position, allowed/refused.
    pub fn report(&self, who: &str) -> String {
        let mut lines: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for ((resource, method, position, allowed), n) in &self.cells {
            lines
                .entry((resource.clone(), method.clone()))
                .or_default()
                .push(format!(
                    "{position:?}:{}{n}",
                    if *allowed { "ok" } else { "refused" }
                ));
        }
        let mut out = format!(
            "{who}: {} cases over {} resource/method pairs\n",
            self.cases(),
            lines.len()
        );
        for ((resource, method), cells) in lines {
            out.push_str(&format!(
                "  {resource:<12} {method:<20} {}\n",
                cells.join(" ")
            ));
        }
        out
    }
}
