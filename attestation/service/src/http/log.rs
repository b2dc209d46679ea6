//! The transparency log's public routes (C2SP tlog-tiles): the latest checkpoint, hash tiles and
//! entry bundles. Open to anyone, like the log itself; tiles are immutable once served, so they
//! carry a year-long immutable cache lifetime and can sit behind any CDN.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use nacre_protocol::{ErrorBody, ErrorCode};
use nacre_tlog::tree::HashTile;

use super::{Reply, Svc, public_route};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn storage(e: crate::store::StoreError) -> ErrorBody {
    tracing::error!(error = %e, "transparency log read failed");
    ErrorBody::new(ErrorCode::Internal, "storage failure")
}

/// `GET /v1/log/checkpoint`: the latest signed checkpoint with its cosignatures.
pub(super) async fn checkpoint(State(svc): Svc) -> Reply {
    public_route(&svc.clone(), "log", async move {
        let Some((_, note)) = svc.store().log_checkpoint().await.map_err(storage)? else {
            return Err(ErrorBody::new(ErrorCode::NotFound, "the log has no entries yet"));
        };
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], note)
            .into_response())
    })
    .await
}

/// `GET /v1/log/key`: the log's verifier key (`vkey`). Pin it out of band; this is a convenience.
pub(super) async fn key(State(svc): Svc) -> Reply {
    public_route(&svc.clone(), "log", async move {
        let vkey = format!("{}\n", svc.store().log_key().vkey());
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], vkey).into_response())
    })
    .await
}

/// `GET /v1/log/witnessed/<index>`: leaf `index`'s entry and inclusion proof under the best
/// witnessed checkpoint covering it (most cosignatures, then largest), as a CBOR `ReleaseLog`.
/// An enclave polls it in the background until its release is witnessed; 404 when the service
/// pushes to no witness.
pub(super) async fn witnessed(State(svc): Svc, Path(index): Path<String>) -> Reply {
    public_route(&svc.clone(), "log", async move {
        let index: u64 = index
            .parse()
            .ok()
            .filter(|_| index == "0" || !index.starts_with('0'))
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "not a leaf index"))?;
        // With no witness, no checkpoint will ever be cosigned: say so, so nobody waits.
        if svc.witnesses().is_empty() {
            return Err(ErrorBody::new(ErrorCode::NotFound, "this log has no witnesses"));
        }
        let Some((entry, checkpoint, proof)) = svc.store().log_witnessed(index).await.map_err(storage)?
        else {
            return Err(ErrorBody::new(ErrorCode::NotFound, "no checkpoint covers this leaf yet"));
        };
        Ok(super::cbor_response(
            StatusCode::OK,
            &nacre_protocol::messages::ReleaseLog {
                entry: entry.into(),
                index,
                inclusion: proof.iter().map(|h| h.0.to_vec().into()).collect(),
                checkpoint: checkpoint.into(),
            },
        ))
    })
    .await
}

/// `GET /v1/log/tile/<L>/<N>[.p/<W>]` and `GET /v1/log/tile/entries/<N>[.p/<W>]`.
pub(super) async fn tile(State(svc): Svc, Path(rest): Path<String>) -> Reply {
    public_route(&svc.clone(), "log", async move {
        let not_found = || ErrorBody::new(ErrorCode::NotFound, "no such tile");
        let body = if let Some(index) = rest.strip_prefix("entries/") {
            // Same coordinates as a level-0 hash tile: entries N*256 .. N*256+W.
            let t = HashTile::parse(&format!("tile/0/{index}")).map_err(|_| not_found())?;
            let start = t.index() << nacre_tlog::tree::TILE_HEIGHT;
            match svc.store().log_entry_bundle(start, u64::from(t.width())).await {
                Ok(bundle) => bundle,
                Err(crate::store::StoreError::Log(_)) => return Err(not_found()),
                Err(e) => return Err(storage(e)),
            }
        } else {
            let t = HashTile::parse(&format!("tile/{rest}")).map_err(|_| not_found())?;
            let size = svc.store().log_size().await.map_err(storage)?;
            match svc.store().log_tile(size, t).await {
                Ok(bytes) => bytes,
                Err(crate::store::StoreError::Log(_)) => return Err(not_found()),
                Err(e) => return Err(storage(e)),
            }
        };
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, IMMUTABLE)],
            body,
        )
            .into_response())
    })
    .await
}
