//! The hierarchy a test builds through the API, and a model of it.
//!
//! Every tree is built by one step, [`Model::create`]: create an entity through an [`Api`]
//! (Tidings in-process or the real binary), check the answer, and record the entity in a
//! [`Model`], which says independently of the server who is above whom and so who should see
//! what. On it stand the standard [`Tree`] (reseller → dealer → company → two sites, with users
//! and meetings, in the seed's shapes), the [`Line`] down to meetings that reach the reseller
//! alone, and whatever shape a test builds itself (the tenancy tests' two resellers).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::server::TestServer;
use super::shapes::{is_id, Routed};

/// What building a tree needs of a running Tidings.
#[allow(async_fn_in_trait)] // used with generics only
pub trait Api {
    /// POSTs `body` to the collection, expects 201, and answers the created entity.
    async fn create(&self, collection: &str, body: &Value) -> Value;
}

// ---------------------------------------------------------------------------------------------
// The standard trees

/// A receiving level of the tree: its type, id and the `webhook_url` it was given.
#[derive(Debug, Clone)]
pub struct Level {
    pub level: &'static str,
    pub id: String,
    pub url: String,
}

impl Level {
    pub fn routed(&self) -> Routed {
        (self.level.to_owned(), self.id.clone(), self.url.clone())
    }
}

/// reseller → dealer → company → sites A and B, with a package on the company; a user owned by
/// the company and linked to both sites, a user owned by the dealer; a direct meeting and a
/// personal meeting (at site A), both created by the company's user. Every level has its own
/// `https://` webhook URL.
#[derive(Debug, Clone)]
pub struct Tree {
    pub reseller: Level,
    pub dealer: Level,
    pub company: Level,
    pub site_a: Level,
    pub site_b: Level,
    pub package: String,
    pub company_user: String,
    pub dealer_user: String,
    pub direct_meeting: String,
    pub personal_meeting: String,
    /// Every entity of it, labelled by the field that holds it, with its 201 answer.
    pub model: Model,
}

/// A distinct `https://` webhook URL that no delivery can reach: an IP literal on loopback,
/// which the SSRF guard refuses before connecting. So the tests make no DNS lookup and send
/// nothing anywhere, whatever the dispatcher does with the webhooks they create.
pub fn hook_url(name: &str) -> String {
    format!("https://127.0.0.1:9/hooks/{name}")
}

/// A contact in the seed's shape (phone and language included).
pub fn contact(first: &str, email: &str) -> Value {
    json!({
        "first_name": first, "last_name": "Lastname", "email": email,
        "phone": "+31612345678", "language": "nl"
    })
}

/// A company named `C` under the dealer `dealer_id`, without a webhook URL of its own.
pub fn company_body(dealer_id: &str) -> Value {
    json!({"name": "C", "contact": contact("C", "c@tidings.test"), "dealer": {"id": dealer_id}})
}

/// A site body with every optional field of the seed's site example.
pub fn site_body(name: &str, company: &str, webhook_url: Option<&str>) -> Value {
    let mut b = json!({
        "name": name,
        "company": {"id": company},
        "logo": "https://cdn.example.test/logo.png",
        "videochat_font_type": "Roboto",
        "videochat_text_color": "#000000",
        "email_invite_text": "Hereby I send you the confirmation for our online video call.",
        "email_cancel_text": "In case of a rescheduled appointment you will receive a new invitation.",
        "email_hardwaretest_text": "Using the link below you can test your hardware.",
        "email_enable_hardwaretest": false
    });
    if let Some(u) = webhook_url {
        b["webhook_url"] = json!(u);
    }
    b
}

/// A user owned by `owner` (`company`, `dealer` or `reseller`), linked to `sites`.
pub fn user_body(first: &str, owner_type: &str, owner: &str, sites: &[&str]) -> Value {
    json!({
        "first_name": first, "last_name": "Lastname",
        "email": format!("{}@tidings.test", first.to_lowercase()),
        "photo": "https://cdn.example.test/photo.png",
        "locale": "nl", "role": "agent", "status": "online",
        "entity": {"type": owner_type, "id": owner},
        "sites": sites.iter().map(|s| json!({"id": s})).collect::<Vec<_>>()
    })
}

/// A direct meeting: an agent and a visitor known by phone, as in the seed's example.
pub fn direct_meeting_body(company: &str, agent: &str) -> Value {
    json!({
        "company": {"id": company},
        "created_by": {"id": agent},
        "stream_camera_two_way": true,
        "participants": [{"user": agent}, {"phone": "+3112312312"}]
    })
}

/// A personal meeting at `site`: an agent and two visitors, as in the seed's example.
pub fn personal_meeting_body(company: &str, site: &str, agent: &str) -> Value {
    json!({
        "company": {"id": company},
        "site": {"id": site},
        "created_by": {"id": agent},
        "is_appointment": true,
        "room_available_from": "2030-03-18T14:15:00.000Z",
        "room_available_till": "2030-03-18T15:15:00.000Z",
        "subject": "Meeting",
        "invitation": "On the specified date and time you can click the link in this email.",
        "participants": [
            {"user": agent},
            {"name": "Participant 1", "email": "visitor1@participant.test", "phone": "+31612312312"},
            {"name": "Participant 2", "email": "visitor2@participant.test", "phone": "+31612312313"}
        ]
    })
}

impl Tree {
    /// Builds the tree through the API of `s`, every step checked.
    pub fn build(s: &TestServer) -> Tree {
        futures::executor::block_on(Tree::build_on(s))
    }

    /// [`Tree::build`] through any API.
    pub async fn build_on(api: &impl Api) -> Tree {
        let mut m = Model::default();
        let url = |level: &str| hook_url(level);

        let reseller = m
            .create(
                api,
                Kind::Reseller,
                "reseller",
                json!({"name": "Reseller 1", "contact": contact("Reseller", "reseller1@tidings.test"),
                       "webhook_url": url("reseller")}),
            )
            .await;
        let package = m
            .create(
                api,
                Kind::Package,
                "package",
                json!({"name": "professional",
                       "features": ["agent_create_appointment", "send_file", "screenshot", "chat"]}),
            )
            .await;
        let dealer = m
            .create(
                api,
                Kind::Dealer,
                "dealer",
                json!({"name": "Dealer 1", "contact": contact("Dealer", "dealer1@tidings.test"),
                       "reseller": {"id": reseller}, "webhook_url": url("dealer")}),
            )
            .await;
        let company = m
            .create(
                api,
                Kind::Company,
                "company",
                json!({"name": "Company 1", "contact": contact("Company", "contact1@tidings.test"),
                       "dealer": {"id": dealer}, "package": {"id": package},
                       "webhook_url": url("company")}),
            )
            .await;
        let site_a = m
            .create(
                api,
                Kind::Site,
                "site_a",
                site_body("Site A", &company, Some(&url("site-a"))),
            )
            .await;
        let site_b = m
            .create(
                api,
                Kind::Site,
                "site_b",
                site_body("Site B", &company, Some(&url("site-b"))),
            )
            .await;
        let company_user = m
            .create(
                api,
                Kind::User,
                "company_user",
                user_body("Agent", "company", &company, &[&site_a, &site_b]),
            )
            .await;
        let dealer_user = m
            .create(
                api,
                Kind::User,
                "dealer_user",
                user_body("Dealeragent", "dealer", &dealer, &[]),
            )
            .await;
        let direct_meeting = m
            .create(
                api,
                Kind::Meeting,
                "direct_meeting",
                direct_meeting_body(&company, &company_user),
            )
            .await;
        let personal_meeting = m
            .create(
                api,
                Kind::Meeting,
                "personal_meeting",
                personal_meeting_body(&company, &site_a, &company_user),
            )
            .await;
        let level = |level: &'static str, id: &str, u: &str| Level {
            level,
            id: id.to_owned(),
            url: url(u),
        };
        Tree {
            reseller: level("reseller", &reseller, "reseller"),
            dealer: level("dealer", &dealer, "dealer"),
            company: level("company", &company, "company"),
            site_a: level("site", &site_a, "site-a"),
            site_b: level("site", &site_b, "site-b"),
            package,
            company_user,
            dealer_user,
            direct_meeting,
            personal_meeting,
            model: m,
        }
    }
}

/// A line down to meetings that reach the reseller alone: a reseller whose webhooks go to
/// `reseller_url` → a dealer → a company with a package, one agent of the company, and
/// direct meetings it created. No other level has a URL.
#[derive(Debug, Clone)]
pub struct Line {
    pub reseller: String,
    pub company: String,
    pub meetings: Vec<String>,
}

impl Line {
    /// Builds the line with `meetings` meetings through the API of `s`, every step checked.
    pub fn build(s: &TestServer, reseller_url: &str, meetings: usize) -> Line {
        futures::executor::block_on(Line::build_on(s, reseller_url, meetings))
    }

    /// [`Line::build`] through any API.
    pub async fn build_on(api: &impl Api, reseller_url: &str, meetings: usize) -> Line {
        let mut m = Model::default();
        let reseller = m
            .create(api, Kind::Reseller, "reseller", reseller_body(reseller_url))
            .await;
        let dealer = m
            .create(api, Kind::Dealer, "dealer", dealer_body(&reseller, "D"))
            .await;
        let package = m
            .create(
                api,
                Kind::Package,
                "package",
                json!({"name": "basic", "features": ["chat"]}),
            )
            .await;
        let company = m
            .create(
                api,
                Kind::Company,
                "company",
                json!({"name": "C", "contact": contact("Ada", "ada@tidings.test"),
                       "dealer": {"id": dealer}, "package": {"id": package}}),
            )
            .await;
        let agent = m
            .create(
                api,
                Kind::User,
                "agent",
                user_body("Agent", "company", &company, &[]),
            )
            .await;
        let mut made = Vec::new();
        for n in 0..meetings {
            let body = direct_meeting_body(&company, &agent);
            made.push(
                m.create(api, Kind::Meeting, &format!("meeting{n}"), body)
                    .await,
            );
        }
        Line {
            reseller,
            company,
            meetings: made,
        }
    }
}

/// A reseller whose webhooks go to `webhook_url`, with a notification contact.
pub fn reseller_body(webhook_url: &str) -> Value {
    json!({
        "name": "Reseller",
        "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@reseller.example"},
        "notification_contact": {"email": "alerts@reseller.example"},
        "webhook_url": webhook_url,
    })
}

/// A dealer named `name` under `reseller_id`, without a webhook URL of its own.
pub fn dealer_body(reseller_id: &str, name: &str) -> Value {
    json!({
        "name": name,
        "contact": {"first_name": "Dirk", "last_name": "Dealer", "email": "dirk@dealer.example"},
        "reseller": {"id": reseller_id},
    })
}

// ---------------------------------------------------------------------------------------------
// The model: what exists and who should see it

/// The entity kinds (the crate's own list), in the order their collections are listed.
pub use tidings::domain::Kind;

/// The API's collection of a kind, as the contract spells it in paths.
pub trait Collection {
    fn collection(self) -> &'static str;
}

impl Collection for Kind {
    fn collection(self) -> &'static str {
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
            Who::Operator => super::OPERATOR_KEY,
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

/// The hierarchy as the test built and changed it: what exists, who is above whom, and so
/// who should see what, independently of the server.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub nodes: Vec<Node>,
    /// The 201 answer of every create through [`Model::create`], by id.
    pub created: BTreeMap<String, Value>,
}

impl Model {
    /// Creates an entity through the API (expecting 201 and a 24-hex id) and records it in
    /// the model under `label`; answers its id. The one step every tree is built by.
    pub async fn create(&mut self, api: &impl Api, kind: Kind, label: &str, body: Value) -> String {
        let made = api.create(kind.collection(), &body).await;
        let id = made["id"]
            .as_str()
            .expect("created entity has an id")
            .to_owned();
        assert!(is_id(&id), "{} id {id:?}", kind.collection());
        self.add(node_for(kind, label, &id, &body));
        self.created.insert(id.clone(), made);
        id
    }

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

    /// Every user and meeting that [`Model::inconsistency`] finds fault with, by label.
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
