//! PostgreSQL's write transactions, on `tokio-postgres`: its statements are **pipelined**.
//!
//! A transaction's `BEGIN` is not sent on its own: it goes out with the transaction's first
//! statement, and the writes put off with [`Exec::execute_later`] go out with the statement
//! after them or with the `COMMIT`, each request written without waiting for the answer to
//! the one before. An API change is then two round trips (`BEGIN` and its read; its writes
//! and `COMMIT`), a recorded batch two, a health update one. PostgreSQL runs the statements
//! one after the other as ever; what goes is the wait between them, and with it a wake-up of
//! the server's backend and of our task per statement (about a fifth of each side's CPU per
//! delivered webhook, measured in BENCHMARKS.md). sqlx, which serves every other query,
//! sends one statement at a time.
//!
//! A failed statement aborts the transaction, so the statements behind it in the pipeline
//! fail too; the error returned is the first one's.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::exec::{Cell, Exec, Param, Row, Value};
use super::{Fault, Result, StoreError, StoreOptions};

/// How many statements a connection keeps prepared at most; past that its cache starts over
/// (the hot path uses a few dozen texts).
const PREPARED: usize = 256;

/// The pool of connections that PostgreSQL's write transactions run on.
#[derive(Clone)]
pub(super) struct PgWriter {
    pool: Pool,
}

impl PgWriter {
    /// A pool of up to `options.write_connections` connections to the database at `url`
    /// (opened as they are needed).
    pub(super) fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::PostgresUrl(e.to_string()))?;
        if config.get_application_name().is_none() {
            config.application_name("tidings");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // sqlx's default wait, as for the other pool.
        let wait = options.acquire_timeout.unwrap_or(Duration::from_secs(30));
        let pool = Pool::builder(manager)
            .max_size(options.write_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .expect("the only build error is timeouts without a runtime, and it has one");
        Ok(PgWriter { pool })
    }

    /// A transaction that begins with `begin` (`BEGIN` and any `SET LOCAL`), sent with its
    /// first statement.
    pub(super) async fn begin(&self, begin: &'static str) -> Result<PgTx> {
        Ok(PgTx {
            client: Some(self.pool.get().await?),
            begin: Some(begin),
            later: Vec::new(),
            open: false,
        })
    }
}

/// A write transaction on PostgreSQL (see the module's doc). Dropping it without
/// [`Exec::commit`] rolls it back.
pub(super) struct PgTx {
    /// The connection, until the transaction ends.
    client: Option<Object>,
    /// What begins the transaction, until it is sent.
    begin: Option<&'static str>,
    /// Writes put off until the next statement or the commit.
    later: Vec<(String, Vec<Value>)>,
    /// Whether the `BEGIN` went out: a drop then has to roll back.
    open: bool,
}

/// What the last request of a round trip is.
enum Last<'a> {
    Execute(&'a str, &'a [Param<'a>]),
    Fetch(&'a str, &'a [Param<'a>]),
    Commit,
}

/// A statement's outcome: rows changed, or rows returned.
enum Answer {
    Changed(u64),
    Rows(Vec<tokio_postgres::Row>),
}

type Request<'a> = Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send + 'a>>;

impl PgTx {
    /// Sends what has to go before `last` (the `BEGIN`, the writes put off), then `last`,
    /// all in one round trip; answers `last`'s outcome.
    async fn round(&mut self, last: Last<'_>) -> Result<Answer> {
        let later = std::mem::take(&mut self.later);
        let client = self.client.as_ref().expect("the transaction is open");
        // Statements are prepared once per connection (a round trip the first time).
        if client.statement_cache.size() > PREPARED {
            client.statement_cache.clear();
        }
        let mut statements = Vec::with_capacity(later.len());
        for (sql, _) in &later {
            statements.push(client.prepare_cached(sql).await?);
        }
        let last_statement = match last {
            Last::Execute(sql, _) | Last::Fetch(sql, _) => Some(client.prepare_cached(sql).await?),
            Last::Commit => None,
        };
        let later_params: Vec<Vec<Param<'_>>> = later
            .iter()
            .map(|(_, values)| values.iter().map(Value::param).collect())
            .collect();
        let later_refs: Vec<Vec<&(dyn ToSql + Sync)>> = later_params
            .iter()
            .map(|ps| ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
            .collect();
        let last_refs: Vec<&(dyn ToSql + Sync)> = match last {
            Last::Execute(_, ps) | Last::Fetch(_, ps) => {
                ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
            }
            Last::Commit => Vec::new(),
        };
        let mut requests: Vec<Request<'_>> = Vec::with_capacity(later.len() + 2);
        if let Some(begin) = self.begin.take() {
            requests.push(Box::pin(async move {
                client
                    .batch_execute(begin)
                    .await
                    .map(|_| Answer::Changed(0))
            }));
        }
        for (statement, params) in statements.iter().zip(&later_refs) {
            requests.push(Box::pin(async move {
                client.execute(statement, params).await.map(Answer::Changed)
            }));
        }
        requests.push(match (&last_statement, last) {
            (Some(statement), Last::Fetch(..)) => {
                Box::pin(async { client.query(statement, &last_refs).await.map(Answer::Rows) })
            }
            (Some(statement), _) => Box::pin(async {
                client
                    .execute(statement, &last_refs)
                    .await
                    .map(Answer::Changed)
            }),
            (None, _) => Box::pin(async move {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map(|_| Answer::Changed(0))
            }),
        });
        self.open = true;
        let mut answers = pipelined(requests).await;
        let last = answers.pop().expect("the last request is there");
        // The first error is the cause; the requests after it fail only because of it.
        for answer in answers {
            answer?;
        }
        Ok(last?)
    }
}

/// Runs `requests` pipelined and answers their outcomes in order. A tokio-postgres request
/// goes out when its future is first polled, so each is polled once, in order, before any
/// answer is awaited.
async fn pipelined<T>(mut requests: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut ready: Vec<Option<T>> = Vec::with_capacity(requests.len());
    for request in &mut requests {
        ready.push(match futures::poll!(request.as_mut()) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        });
    }
    let mut out = Vec::with_capacity(requests.len());
    for (request, ready) in requests.into_iter().zip(ready) {
        out.push(match ready {
            Some(outcome) => outcome,
            None => request.await,
        });
    }
    out
}

#[async_trait]
impl Exec for PgTx {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        match self.round(Last::Execute(sql, params)).await? {
            Answer::Changed(n) => Ok(n),
            Answer::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        match self.round(Last::Fetch(sql, params)).await? {
            Answer::Rows(rows) => rows.iter().map(row_from_pg).collect(),
            Answer::Changed(_) => Ok(Vec::new()),
        }
    }

    async fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<()> {
        self.later
            .push((sql.to_owned(), params.iter().map(Value::of).collect()));
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.begin.is_some() && self.later.is_empty() {
            // Nothing was sent: there is nothing to commit.
            self.begin = None;
            return Ok(());
        }
        self.round(Last::Commit).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if !self.open {
            return; // back to the pool as it came
        }
        // The connection goes back to the pool only once the transaction is rolled back;
        // one that cannot roll back is closed.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(Object::take(client));
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = client.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %e, "rolling back a PostgreSQL transaction failed; closing its connection");
                drop(Object::take(client));
            }
        });
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Text(s) | Param::OptText(Some(s)) if <&str as ToSql>::accepts(ty) => {
                s.to_sql(ty, out)
            }
            // The statement says which width it takes.
            Param::Int(i) | Param::OptInt(Some(i)) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                _ => Err(format!("an integer given for a parameter of type {ty}").into()),
            },
            Param::Text(_) | Param::OptText(Some(_)) => {
                Err(format!("text given for a parameter of type {ty}").into())
            }
            Param::OptText(None) | Param::OptInt(None) => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true // checked by `to_sql`, which knows the value
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A row's cells by each column's type (the statements return text and integers).
fn row_from_pg(row: &tokio_postgres::Row) -> Result<Row> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let cell = match *ty {
                Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map(|v| Cell::Int(v.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map(|v| Cell::Int(v.into())),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)?
                    .map(|v| Cell::Int(v.into())),
                _ if <String as tokio_postgres::types::FromSql>::accepts(ty) => {
                    row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "column {} has type {ty}, neither text nor an integer",
                        row.columns()[i].name()
                    )))
                }
            };
            Ok(cell.unwrap_or(Cell::Null))
        })
        .collect::<Result<Vec<_>>>()
        .map(Row::new)
}

/// What a tokio-postgres error means for the request that met it.
pub(super) fn pg_fault(e: &tokio_postgres::Error) -> Fault {
    if let Some(code) = e.code() {
        return super::code_fault(code.code());
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        Fault::Unavailable
    } else {
        Fault::Other
    }
}

/// What a pool error means: the pool could not give a connection in time, or could not
/// open one.
pub(super) fn pool_fault(e: &deadpool_postgres::PoolError) -> Fault {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Backend(e) => pg_fault(e),
        P::Timeout(_) | P::Closed => Fault::Unavailable,
        _ => Fault::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A request that logs when it goes out (its first poll) and when it is answered (a
    /// later poll).
    fn request(
        i: usize,
        log: Arc<Mutex<Vec<String>>>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send>> {
        Box::pin(async move {
            log.lock().unwrap().push(format!("sent {i}"));
            tokio::task::yield_now().await;
            log.lock().unwrap().push(format!("answered {i}"));
            i
        })
    }

    #[tokio::test]
    async fn pipelined_requests_all_go_out_in_order_before_any_answer_is_awaited() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests = (0..3).map(|i| request(i, log.clone())).collect();
        assert_eq!(pipelined(requests).await, vec![0, 1, 2]);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "sent 0",
                "sent 1",
                "sent 2",
                "answered 0",
                "answered 1",
                "answered 2"
            ]
        );
    }

    #[tokio::test]
    async fn a_request_answered_at_once_keeps_its_place() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests: Vec<Pin<Box<dyn Future<Output = usize> + Send>>> = vec![
            request(0, log.clone()),
            Box::pin(async { 1 }),
            request(2, log.clone()),
        ];
        assert_eq!(pipelined(requests).await, vec![0, 1, 2]);
    }

    #[test]
    fn a_url_the_write_pool_cannot_take_is_refused_and_its_size_is_the_setting() {
        let refused = PgWriter::open(
            "postgres://postgres@127.0.0.1:1/x?statement-cache-capacity=10",
            &StoreOptions::default(),
        );
        assert!(
            matches!(refused, Err(StoreError::PostgresUrl(_))),
            "{:?}",
            refused.err()
        );
        let options = StoreOptions {
            write_connections: 3,
            ..StoreOptions::default()
        };
        let taken = PgWriter::open("postgres://postgres@127.0.0.1:1/x", &options).unwrap();
        assert_eq!(taken.pool.status().max_size, 3);
    }

    /// The value as sent, or `None` for NULL; or the error.
    fn encoded(p: Param<'_>, ty: &Type) -> Result<Option<Vec<u8>>, String> {
        let mut out = bytes::BytesMut::new();
        match p.to_sql_checked(ty, &mut out) {
            Ok(IsNull::No) => Ok(Some(out.to_vec())),
            Ok(IsNull::Yes) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn integers_take_the_width_the_statement_asks_for() {
        assert_eq!(
            encoded(Param::Int(7), &Type::INT8).unwrap().unwrap(),
            7i64.to_be_bytes()
        );
        assert_eq!(
            encoded(Param::Int(7), &Type::INT4).unwrap().unwrap(),
            7i32.to_be_bytes()
        );
        assert_eq!(
            encoded(Param::OptInt(Some(-2)), &Type::INT2)
                .unwrap()
                .unwrap(),
            (-2i16).to_be_bytes()
        );
        assert!(encoded(Param::Int(i64::MAX), &Type::INT4).is_err());
        assert!(encoded(Param::Int(1), &Type::TEXT)
            .unwrap_err()
            .contains("integer"));
    }

    #[test]
    fn text_goes_to_text_parameters_only_and_none_is_null() {
        assert_eq!(
            encoded(Param::Text("hé"), &Type::TEXT).unwrap().unwrap(),
            "hé".as_bytes()
        );
        assert!(encoded(Param::Text("1"), &Type::INT8)
            .unwrap_err()
            .contains("text"));
        assert_eq!(encoded(Param::OptText(None), &Type::INT8), Ok(None));
        assert_eq!(encoded(Param::OptInt(None), &Type::TEXT), Ok(None));
    }
}
