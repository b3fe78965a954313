//! Which pages are finished: a page is settled when every recipient launched from it has its
//! final outcome and nothing more will be launched from it, and every page before it is
//! settled too. The position after the last settled page is where a continuation may start
//! without skipping anyone; the counts of settled pages are what a checkpoint may promise.

use std::collections::VecDeque;

use crate::protocol::broadcast::FanoutReport;
use crate::store::{Recipient, Span};

/// How one recipient ended.
#[derive(Debug)]
pub(super) enum Final {
    Delivered,
    Gone,
    Failed,
    /// Not posted to (or its last attempt cut short): the invocation's time ran out.
    Unsent(Recipient),
}

/// What settled pages add up to.
#[derive(Debug, Clone, Default)]
pub(super) struct Settled {
    /// Where the rest starts; `None`: nothing is left.
    pub rest: Option<Span>,
    /// Outcomes of settled recipients, the unsent left out: they have none yet.
    pub report: FanoutReport,
    pub retries: u64,
    /// Settled, but not posted to: whoever continues sends them first.
    pub unsent: Vec<Recipient>,
}

#[derive(Debug)]
struct Entry {
    page: u64,
    launched: u64,
    finished: u64,
    /// Every recipient of the page has been launched (or left out).
    dispatched: bool,
    rest: Option<Span>,
    report: FanoutReport,
    retries: u64,
    unsent: Vec<Recipient>,
}

#[derive(Debug)]
pub(super) struct Ledger {
    pages: VecDeque<Entry>,
    next: u64,
    settled: Settled,
}

impl Ledger {
    /// A ledger whose reader starts at `start` (`None`: it has nothing to read).
    pub fn new(start: Option<Span>) -> Self {
        Self {
            pages: VecDeque::new(),
            next: 0,
            settled: Settled {
                rest: start,
                ..Settled::default()
            },
        }
    }

    /// A new page, after which the reader stands at `rest`.
    pub fn open(&mut self, rest: Option<Span>) -> u64 {
        let page = self.next;
        self.next += 1;
        self.pages.push_back(Entry {
            page,
            launched: 0,
            finished: 0,
            dispatched: false,
            rest,
            report: FanoutReport::default(),
            retries: 0,
            unsent: Vec::new(),
        });
        page
    }

    fn entry(&mut self, page: u64) -> Option<&mut Entry> {
        self.pages.iter_mut().find(|e| e.page == page)
    }

    pub fn launched(&mut self, page: u64) {
        if let Some(entry) = self.entry(page) {
            entry.launched += 1;
        }
    }

    /// Nothing more will be launched from `page`.
    pub fn dispatched(&mut self, page: u64) {
        if let Some(entry) = self.entry(page) {
            entry.dispatched = true;
        }
    }

    pub fn finished(&mut self, page: u64, outcome: &Final, retries: u32) {
        let Some(entry) = self.entry(page) else {
            return;
        };
        entry.finished += 1;
        entry.retries += u64::from(retries);
        let report = &mut entry.report;
        match outcome {
            Final::Delivered => report.delivered += 1,
            Final::Gone => report.gone += 1,
            Final::Failed => report.failed += 1,
            Final::Unsent(recipient) => {
                entry.unsent.push(recipient.clone());
                return;
            }
        }
        report.recipients += 1;
    }

    /// Settles the oldest finished pages; true when any settled.
    pub fn settle(&mut self) -> bool {
        let mut any = false;
        while self
            .pages
            .front()
            .is_some_and(|e| e.dispatched && e.finished == e.launched)
        {
            let Some(entry) = self.pages.pop_front() else {
                break;
            };
            let settled = &mut self.settled;
            settled.rest = entry.rest;
            settled.retries += entry.retries;
            settled.unsent.extend(entry.unsent);
            let (total, page) = (&mut settled.report, entry.report);
            total.recipients += page.recipients;
            total.delivered += page.delivered;
            total.gone += page.gone;
            total.failed += page.failed;
            any = true;
        }
        any
    }

    pub fn settled(&self) -> &Settled {
        &self.settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ConnectionId;

    fn at(id: &str) -> Option<Span> {
        Some(Span::all().after(&ConnectionId::new(id)))
    }

    #[test]
    fn a_page_settles_only_after_every_page_before_it() {
        // GIVEN two pages of two recipients each
        let mut ledger = Ledger::new(Some(Span::all()));
        let (first, second) = (ledger.open(at("b")), ledger.open(None));
        for page in [first, first, second, second] {
            ledger.launched(page);
        }
        ledger.dispatched(first);
        ledger.dispatched(second);
        // WHEN the second page finishes first
        ledger.finished(second, &Final::Delivered, 0);
        ledger.finished(second, &Final::Gone, 2);
        ledger.finished(first, &Final::Delivered, 0);
        // THEN nothing settles while the first page has a recipient out
        assert!(!ledger.settle());
        assert_eq!(ledger.settled().rest, Some(Span::all()));
        // WHEN it comes back, both settle, and the reader's position is the end
        ledger.finished(first, &Final::Failed, 1);
        assert!(ledger.settle());
        let settled = ledger.settled();
        assert_eq!(settled.rest, None);
        assert_eq!(
            settled.report,
            FanoutReport {
                recipients: 4,
                delivered: 2,
                gone: 1,
                failed: 1
            }
        );
        assert_eq!(settled.retries, 3);
    }

    #[test]
    fn unsent_recipients_settle_apart_from_the_counts() {
        // GIVEN a page of two: one delivered, one the deadline left unsent
        let mut ledger = Ledger::new(Some(Span::all()));
        let page = ledger.open(None);
        ledger.launched(page);
        ledger.launched(page);
        ledger.dispatched(page);
        ledger.finished(page, &Final::Delivered, 0);
        let late = Recipient {
            connection_id: ConnectionId::new("late="),
            user_id: crate::protocol::UserId::new("u"),
            endpoint: "https://e/prod".into(),
        };
        ledger.finished(page, &Final::Unsent(late.clone()), 1);
        // THEN the page settles: the unsent one is handed on, not counted
        assert!(ledger.settle());
        let settled = ledger.settled();
        assert_eq!(settled.report.recipients, 1);
        assert_eq!(settled.report.failed, 0);
        assert_eq!(settled.unsent, vec![late]);
    }

    #[test]
    fn a_page_still_being_dispatched_does_not_settle() {
        let mut ledger = Ledger::new(Some(Span::all()));
        let page = ledger.open(at("x"));
        ledger.launched(page);
        ledger.finished(page, &Final::Delivered, 0);
        assert!(!ledger.settle());
        ledger.dispatched(page);
        assert!(ledger.settle());
        assert_eq!(ledger.settled().rest, at("x"));
    }
}
