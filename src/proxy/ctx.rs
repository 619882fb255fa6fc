//! [`Ctx`]: the state of one request, from the first filter to `logging`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use smallvec::SmallVec;

use super::buffer::BufferedBody;
use crate::compression::Encoder;
use crate::config::{Compression, Route};
use crate::lifecycle::drain::RequestInFlight;
use crate::pool::{InFlight, Pool};
use crate::rate_limit::{Decision as RateDecision, Key as RateKey, Limiter};
use crate::state::Snapshot;

/// Per-request state, alive from the first filter to `logging`.
pub struct Ctx {
    pub start: Instant,
    /// The config snapshot this request uses from start to end.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Index of the matched route in the route table.
    pub route: Option<usize>,
    pub tls: bool,
    /// `X-Request-Id`: the client's when it is safe, else a new one.
    pub request_id: HeaderValue,
    pub peer_ip: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    /// Which of the fields Gatehouse reads the client may have sent (from
    /// the raw HTTP/1 head; all of them on HTTP/2).
    pub(crate) sent: super::framing::Sent,
    pub pool: Option<Arc<Pool>>,
    /// Servers already tried for this request (inline up to two: no
    /// allocation for the usual one attempt or one retry).
    pub tried: SmallVec<[SocketAddr; 2]>,
    /// Whether a server took the request and then failed the exchange.
    pub exchange_failed: bool,
    pub in_flight: Option<InFlight>,
    /// Whether this attempt's outcome was counted for passive health.
    pub outcome_recorded: bool,
    pub upstream_start: Option<Instant>,
    pub upstream_status: Option<u16>,
    /// The most restrictive rate-limit decision, for the `RateLimit-*` headers.
    pub rate: Option<RateDecision>,
    /// Shared limits of the route still to ask their store about, in order.
    pub shared_limits: Vec<(Arc<Limiter>, RateKey)>,
    /// The request body, read whole before a server was chosen (request buffering).
    pub(crate) body: Option<BufferedBody>,
    /// Request body bytes seen so far, against `max_body`.
    pub body_seen: u64,
    pub max_body: u64,
    /// The status sent to the client (0 when none could be sent).
    pub status: u16,
    /// Compresses the answer's body on its way to the client.
    pub(crate) encoder: Option<Box<Encoder>>,
    /// Counts this request in flight (the drain waits for none) until dropped.
    _counted: RequestInFlight,
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

impl Ctx {
    pub fn new() -> Self {
        Ctx {
            _counted: RequestInFlight::new(),
            start: Instant::now(),
            snapshot: None,
            route: None,
            tls: false,
            request_id: HeaderValue::from_static(""),
            peer_ip: None,
            client_ip: None,
            sent: super::framing::Sent::UNKNOWN,
            pool: None,
            tried: SmallVec::new(),
            exchange_failed: false,
            in_flight: None,
            outcome_recorded: false,
            upstream_start: None,
            upstream_status: None,
            rate: None,
            shared_limits: Vec::new(),
            body: None,
            body_seen: 0,
            max_body: u64::MAX,
            status: 0,
            encoder: None,
        }
    }

    /// The request id as text.
    pub fn request_id(&self) -> &str {
        super::headers::request_id_str(&self.request_id)
    }

    /// The matched route.
    pub fn route(&self) -> Option<&Route> {
        let snapshot = self.snapshot.as_ref()?;
        snapshot.routes.get(self.route?)
    }

    /// The metric series of the request's route.
    pub(crate) fn route_series(&self) -> Option<&crate::metrics::RouteSeries> {
        let snapshot = self.snapshot.as_ref()?;
        snapshot.routes.series(self.route?)
    }

    /// `[compression]`, unless it is off or the route opts out.
    pub fn compression(&self) -> Option<&Compression> {
        let snapshot = self.snapshot.as_ref()?;
        let policy = snapshot.config.compression.as_deref()?;
        self.route().filter(|r| r.compression).map(|_| policy)
    }

    /// Adds the route's CORS headers for `req` (nothing on a route without a
    /// policy).
    pub fn add_cors_headers(
        &self,
        header: &mut ResponseHeader,
        req: &RequestHeader,
    ) -> pingora::Result<()> {
        match self.route().and_then(|r| r.cors.as_deref()) {
            Some(policy) => super::cors::decorate(header, policy, req),
            None => Ok(()),
        }
    }

    /// Adds `RateLimit-Limit`, `-Remaining`, `-Reset` when a limit applied.
    pub fn add_rate_headers(&self, header: &mut ResponseHeader) -> pingora::Result<()> {
        if let Some(d) = &self.rate {
            header.insert_header("ratelimit-limit", d.limit.to_string())?;
            header.insert_header("ratelimit-remaining", d.remaining.to_string())?;
            header.insert_header("ratelimit-reset", d.reset_secs.to_string())?;
        }
        Ok(())
    }
}
