//! The live state: the current [`Snapshot`] behind an `ArcSwap`.
//!
//! A [`Snapshot`] is everything built from one validated config: the route
//! table, static sites, upstream pools and rate limiters. Requests `load` one
//! snapshot and keep it to the end; a reload ([`crate::reload`]) builds the
//! next one completely, then swaps it in with one `store`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::acme::AcmeState;
use crate::config::{Config, Target};
use crate::metrics;
use crate::pool::Pool;
use crate::proxy::route::RouteTable;
use crate::rate_limit::Limiters;
use crate::static_files::Site;
use crate::tls::{CertSet, SniResolver};

/// Everything built from one config.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// `config.routes`, longest prefix first.
    pub routes: RouteTable,
    pub pools: HashMap<String, Arc<Pool>>,
    /// The pool of each route of `routes`, in its order (`None` for a static
    /// route, or a pool name validation let through with no pool): looked
    /// up once per snapshot, not by name per request.
    route_pools: Vec<Option<Arc<Pool>>>,
    pub sites: HashMap<String, Arc<Site>>,
    pub limiters: Limiters,
    /// The http-01 tokens and ACME certificates, with `[acme]` (process-wide,
    /// carried from snapshot to snapshot).
    pub acme: Option<Arc<AcmeState>>,
}

impl Snapshot {
    /// Builds a runtime; state of servers and limits that `previous` shares is kept.
    pub fn build(config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let pools: HashMap<String, Arc<Pool>> = config
            .upstreams
            .iter()
            .map(|(name, up)| {
                let pool = match previous {
                    None => Pool::new(up.clone()),
                    Some(p) => Pool::reloaded(up.clone(), p.pools.get(name).map(Arc::as_ref)),
                };
                (name.clone(), Arc::new(pool))
            })
            .collect();
        let sites = config
            .statics
            .iter()
            .map(|(name, site)| {
                let compression = config.compression.clone();
                let site = Site::with_compression(site.clone(), compression);
                (name.clone(), Arc::new(site))
            })
            .collect();
        let limiters = Limiters::build(&config.rate_limits, previous.map(|p| &p.limiters));
        let routes = RouteTable::new(&config.routes);
        let route_pools = routes
            .iter()
            .map(|route| match &route.target {
                Target::Upstream(name) => pools.get(name).cloned(),
                Target::Static(_) => None,
            })
            .collect();
        Snapshot {
            acme: previous.and_then(|p| p.acme.clone()),
            routes,
            route_pools,
            config: Arc::new(config),
            pools,
            sites,
            limiters,
        }
    }

    /// The pool of the route at `index` (from [`RouteTable::find_index`]).
    pub fn route_pool(&self, index: usize) -> Option<&Arc<Pool>> {
        self.route_pools.get(index)?.as_ref()
    }
}

/// The process-wide state shared by every service.
pub struct State {
    pub(crate) current: ArcSwap<Snapshot>,
    /// Bumped after every successful reload.
    pub(crate) generation: watch::Sender<u64>,
    /// The TLS listener's certificates, when there is one.
    pub(crate) certs: Option<Arc<SniResolver>>,
    /// With `[acme]`: what its background service shares with the listeners.
    pub(crate) acme: Option<Arc<AcmeState>>,
    pub(crate) config_path: PathBuf,
    /// Held for the whole of a reload: one at a time.
    pub(crate) reload_lock: Mutex<()>,
    /// [`State::files_fingerprint`] as the last load or reload attempt saw it.
    pub(crate) loaded_fingerprint: AtomicU64,
    /// When the process loaded its config (for the uptime).
    pub(crate) started: (SystemTime, Instant),
    /// When the running config was loaded, and the last reload attempt.
    pub(crate) reloads: Mutex<ReloadRecord>,
}

/// The config's load and reload times, for the status page.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When the running config was loaded (start-up or the last good reload).
    pub loaded_at: SystemTime,
    /// The last reload attempt, if any: when, and its error if it failed.
    pub last_attempt: Option<(SystemTime, Option<String>)>,
}

impl State {
    /// State for a validated config; loads its certificates.
    pub fn new(config: Config, config_path: &Path) -> Result<Arc<State>, crate::tls::TlsError> {
        let acme = config.acme.as_ref().map(AcmeState::load);
        let certs = match &config.https {
            Some(https) => Some(Arc::new(SniResolver::new(
                CertSet::load(https)?,
                acme.as_ref().map(|a| a.certs.clone()),
            ))),
            None => None,
        };
        let fingerprint =
            crate::reload::fingerprint(&crate::reload::watched_files(config_path, &config));
        let mut runtime = Snapshot::build(config, None);
        runtime.acme = acme.clone();
        for pool in runtime.pools.values() {
            for b in &pool.backends {
                metrics::set_backend_health(pool.name(), &b.label, b.is_healthy());
                if pool.config.passive.is_some() {
                    metrics::set_backend_ejected(pool.name(), &b.label, b.is_ejected());
                }
            }
        }
        Ok(Arc::new(State {
            current: ArcSwap::from_pointee(runtime),
            generation: watch::channel(0).0,
            certs,
            acme,
            config_path: config_path.to_path_buf(),
            reload_lock: Mutex::new(()),
            loaded_fingerprint: AtomicU64::new(fingerprint),
            started: (SystemTime::now(), Instant::now()),
            reloads: Mutex::new(ReloadRecord {
                loaded_at: SystemTime::now(),
                last_attempt: None,
            }),
        }))
    }

    /// The runtime requests should use now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The certificate resolver of the TLS listener.
    pub fn cert_resolver(&self) -> Option<Arc<SniResolver>> {
        self.certs.clone()
    }

    /// What the ACME service shares with the listeners, with `[acme]`.
    pub fn acme(&self) -> Option<Arc<AcmeState>> {
        self.acme.clone()
    }

    /// A receiver that changes after each successful reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// When the process started (wall clock) and how long ago.
    pub fn started(&self) -> (SystemTime, std::time::Duration) {
        (self.started.0, self.started.1.elapsed())
    }

    /// The config's load time and the last reload attempt.
    pub fn reload_record(&self) -> ReloadRecord {
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes a reload attempt: `error` is `None` when it was applied.
    pub(crate) fn note_reload(&self, error: Option<String>) {
        let now = SystemTime::now();
        let mut record = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        if error.is_none() {
            record.loaded_at = now;
        }
        record.last_attempt = Some((now, error));
    }
}
