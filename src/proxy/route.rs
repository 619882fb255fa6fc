//! Routing: which `[[route]]` a request path belongs to (longest prefix
//! first), and the path a server is sent when the route strips its prefix.

use crate::config::Route;
use crate::metrics::RouteSeries;

/// Routes ordered for longest-prefix matching.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first.
    routes: Vec<Route>,
    /// The metric series of each route, in the same order.
    series: Vec<RouteSeries>,
}

impl RouteTable {
    /// Builds the table; the order of `routes` does not matter.
    pub fn new(routes: &[Route]) -> Self {
        let mut routes = routes.to_vec();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let series = routes.iter().map(|_| RouteSeries::default()).collect();
        RouteTable { routes, series }
    }

    /// The route with the longest prefix matching `path`.
    ///
    /// A prefix that ends in `/` also matches the path without that slash, so
    /// `/api/` takes `/api` as well (and `strip_prefix` makes it `/`).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| prefix_matches(&r.prefix, path))
    }

    /// Index of the route with the longest prefix matching `path`.
    pub fn find_index(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| prefix_matches(&r.prefix, path))
    }

    /// The route at `index` (from [`RouteTable::find_index`]).
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The metric series of the route at `index`.
    pub(crate) fn series(&self, index: usize) -> Option<&RouteSeries> {
        self.series.get(index)
    }

    /// All routes, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        || (prefix.len() > 1 && prefix.ends_with('/') && path == &prefix[..prefix.len() - 1])
}

/// The path (with query) to send upstream for `path_and_query` on `route`.
pub fn upstream_path(route: &Route, path_and_query: &str) -> String {
    if !route.strip_prefix {
        return path_and_query.to_string();
    }
    let bare = route.prefix.trim_end_matches('/');
    let rest = path_and_query.strip_prefix(bare).unwrap_or(path_and_query);
    if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;

    fn route(prefix: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.to_string(),
            target: Target::Upstream("u".into()),
            strip_prefix: strip,
            rate_limits: vec![],
            max_body_size: 0,
            request_buffering: true,
            response_buffering: true,
            cors: None,
            access: None,
            compression: true,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new(&[
            route("/", false),
            route("/api/", true),
            route("/api/v2/", true),
        ]);
        assert_eq!(
            t.find("/api/v2/x").map(|r| r.prefix.as_str()),
            Some("/api/v2/")
        );
        assert_eq!(
            t.find("/api/users").map(|r| r.prefix.as_str()),
            Some("/api/")
        );
        assert_eq!(t.find("/api").map(|r| r.prefix.as_str()), Some("/api/"));
        assert_eq!(t.find("/apix").map(|r| r.prefix.as_str()), Some("/"));
        assert_eq!(t.find("/index.html").map(|r| r.prefix.as_str()), Some("/"));
    }

    #[test]
    fn strip_prefix_keeps_query_and_leading_slash() {
        let r = route("/api/", true);
        assert_eq!(upstream_path(&r, "/api/users?id=1"), "/users?id=1");
        assert_eq!(upstream_path(&r, "/api"), "/");
        assert_eq!(upstream_path(&r, "/api/"), "/");
        assert_eq!(upstream_path(&r, "/api?x=1"), "/?x=1");
        assert_eq!(
            upstream_path(&route("/api/", false), "/api/users"),
            "/api/users"
        );
    }
}
