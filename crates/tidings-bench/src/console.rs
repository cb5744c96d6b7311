//! The web console's pages timed with a big store (scenario d, once its backlog is stored):
//! signed in with each of a few keys (the operator's, and keys scoped to a subtree), each
//! page fetched a few times in turn.

use std::time::Instant;

/// What one page took.
pub struct PageTime {
    pub path: &'static str,
    /// The last status seen (200 expected).
    pub status: u16,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// The pages timed: the overview, the tree, the newest deliveries, a filtered list, e-mails.
pub const PAGES: [&str; 5] = [
    "/",
    "/levels",
    "/deliveries",
    "/deliveries?status=failed",
    "/emails",
];

/// Signs in with `key`, then fetches each of [`PAGES`] `rounds` times in turn.
pub async fn time_pages(base: &str, key: &str, rounds: usize) -> anyhow::Result<Vec<PageTime>> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = client
        .post(format!("{base}/sign-in"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("key={key}"))
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the console's sign-in set no session cookie"))?;
    let mut out = Vec::new();
    for path in PAGES {
        let mut times = Vec::with_capacity(rounds);
        let mut status = 0;
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, &cookie)
                .send()
                .await?;
            status = r.status().as_u16();
            r.bytes().await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push(PageTime {
            path,
            status,
            p50_ms: times[times.len() / 2],
            max_ms: times[times.len() - 1],
        });
    }
    Ok(out)
}
