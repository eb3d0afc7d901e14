//! HTTP routers of a node. `api`: the admin API under `/api/v1` (bearer admin token).

pub(crate) mod api;
