//! The lifecycle event stream, as server-sent events: one `event:` per
//! lifecycle event (its kind), with the event as JSON in `data:`. A client
//! that falls behind gets a `lagged` event saying how many it missed. The
//! stream ends when mcpd shuts down, so it never holds shutdown up.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa::IntoParams;

use crate::errors::ApiError;
use crate::state::AppState;

/// Which events to send.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only this server's events. Default: every server's.
    #[serde(default)]
    pub(crate) server: Option<String>,
}

/// Streams lifecycle events as they happen (`text/event-stream`).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream",
        description = "One SSE event per lifecycle event: `event:` is its kind, `data:` the \
                       event as JSON (a `LifecycleEvent`: at, server, instance, kind, message)"),
        (status = 401, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    let receiver = state.lifecycle.subscribe();
    let shutdown = state.shutdown.clone();
    let events = BroadcastStream::new(receiver)
        .filter_map(move |item| {
            let wanted = query.server.clone();
            async move {
                match item {
                    Ok(event) => {
                        if wanted.as_ref().is_some_and(|s| s != &event.server) {
                            return None;
                        }
                        let kind = serde_json::to_value(event.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_else(|| "event".to_owned());
                        Some(
                            Event::default()
                                .event(kind)
                                .json_data(&event)
                                .unwrap_or_else(|_| Event::default().event("error")),
                        )
                    }
                    Err(BroadcastStreamRecvError::Lagged(missed)) => Some(
                        Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}")),
                    ),
                }
            }
        })
        .map(Ok)
        .take_until(async move { shutdown.cancelled().await });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
