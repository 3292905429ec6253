//! Reading a user's queue into pages, for every reader above: the
//! transports and the backend feed. A page is the events after a cursor,
//! group-message references expanded, bounded by a count and by
//! `--max-page-bytes`, with a `gap` first when the cursor belongs to
//! another history (epoch); [`page_json`] writes it as an answer.

use std::io::Write as _;

use crate::app::App;
use crate::error::Error;
use crate::store::{event_json, event_seq, now_ms, Epoch, Follow, Page, PageLimit};
use crate::uid::Uid;

/// The `epoch` a client sent back: what a page or stream gave it.
pub fn parse_epoch(raw: Option<&str>) -> Result<Option<Epoch>, Error> {
    match raw {
        None | Some("") => Ok(None),
        Some(text) => Epoch::parse(text).map(Some).ok_or_else(|| {
            Error::bad(
                "bad_epoch",
                "epoch must be the 1-13 base-36 digits a page or stream gave",
            )
        }),
    }
}

/// Reads events after `cursor`, group-message references expanded, at most
/// `limit` events and about `--max-page-bytes` (at least one event); a
/// cursor beyond the queue's head is a 409 so that the client resets
/// instead of waiting forever.
///
/// A cursor of another `epoch` than the queue's belongs to a history that
/// is gone (the store was wiped or recreated): the page then starts with a
/// `gap` event of seq 0 that names the new epoch, followed by the queue
/// from its start.
pub async fn read_after(
    app: &App,
    uid: &Uid,
    cursor: u64,
    events: usize,
    epoch: Option<Epoch>,
) -> Result<Page, Error> {
    read_following(app, uid, None, cursor, events, epoch).await
}

/// [`read_after`] for a reader that holds `follow` (see
/// [`crate::store::EventQueue::follow`]) on `uid`'s queue.
pub async fn read_following(
    app: &App,
    uid: &Uid,
    follow: Option<&Follow>,
    cursor: u64,
    events: usize,
    epoch: Option<Epoch>,
) -> Result<Page, Error> {
    let limit = PageLimit {
        events,
        bytes: app.config.max_page_bytes(),
    };
    let read = |after| async move {
        match follow {
            Some(follow) => app.store.read_followed(uid, follow, after, limit).await,
            None => app.store.read(uid, after, limit).await,
        }
    };
    let mut page = read(cursor).await?;
    if epoch.is_some_and(|e| e != page.epoch) {
        page = read(0).await?;
        let data = serde_json::json!({"from": 1, "to": cursor, "epoch": page.epoch.to_string()});
        let gap = event_json(0, "gap", now_ms(), &data.to_string());
        page.events.insert(0, bytes::Bytes::from(gap));
    } else if cursor > page.head {
        return Err(Error::cursor_ahead(cursor, page.head));
    }
    // References grow into whole messages here: the budget holds after.
    if crate::chat::group_log::expand(&app.group_log, &mut page.events, limit).await? {
        page.cursor = page
            .events
            .last()
            .and_then(|e| event_seq(e))
            .ok_or_else(|| Error::Internal("an event without a seq".into()))?;
    }
    Ok(page)
}

/// `{"events":[…],"cursor":M,"epoch":E}` written from the stored event
/// JSON as is; with `hints`, pull hints are added (`"hints"`).
pub fn page_json(app: &App, page: &Page, hints: bool) -> Vec<u8> {
    let size: usize = page.events.iter().map(|e| e.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 40);
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(
        body,
        "],\"cursor\":{},\"epoch\":\"{}\"",
        page.cursor, page.epoch
    );
    if let Some(hints) = app.broadcasts.hints().filter(|_| hints) {
        let _ = write!(body, ",\"hints\":{hints}");
    }
    body.push(b'}');
    body
}
