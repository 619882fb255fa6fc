//! `Cache-Control` of a static file: by extension, from the site's rules.

use std::path::Path;

use http::header::HeaderValue;

use crate::config::StaticSite;

/// `Cache-Control` for a file named `file_name` (the index never matches a
/// rule: it must be revalidated so a deploy shows at once).
pub fn cache_control_for<'a>(site: &'a StaticSite, file_name: &str) -> &'a HeaderValue {
    if file_name == site.index {
        return &site.default_cache_control;
    }
    let ext = Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    site.cache_rules
        .iter()
        .find(|r| r.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
        .map_or(&site.default_cache_control, |r| &r.cache_control)
}
