//! TFTP transfers in the machines' event logs: the control plane's
//! [`TransferObserver`], so the timeline shows when a machine loaded iPXE.

use super::server::{TransferObserver, TransferReport};
use crate::credentials::ObservedAddresses;
use crate::event_window::EventWindow;
use std::sync::Arc;
use tinker_core::WorkflowStore;
use tinker_core::store::{EventKind, EventSource, MachineEvent};

/// The longest file name kept in an event, in characters (a client names the
/// file; the log is bounded).
const MAX_RECORDED_FILE: usize = 200;

/// Records each transfer to an address a Hardware holds under that machine,
/// one completed and one abandoned transfer per address every
/// [`MACHINE_EVENT_WINDOW`](crate::event_window::MACHINE_EVENT_WINDOW) at
/// most; transfers to other addresses are not recorded.
#[derive(Debug, Clone)]
pub struct StoreTransferLog {
    store: Arc<dyn WorkflowStore>,
    observed: Option<Arc<ObservedAddresses>>,
    window: Arc<EventWindow>,
    events: Arc<crate::event_writer::EventWriter>,
}

impl StoreTransferLog {
    /// A log into `store`, finding machines by their reserved addresses.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        StoreTransferLog {
            events: Arc::new(crate::event_writer::EventWriter::new(store.clone(), "tftp")),
            store,
            observed: None,
            window: Arc::default(),
        }
    }

    /// Also finds a machine by the address its own DHCP REQUEST asked for
    /// (proxyDHCP mode), as the metadata service does.
    pub fn with_observed_addresses(mut self, observed: Arc<ObservedAddresses>) -> Self {
        self.observed = Some(observed);
        self
    }
}

/// The `namespace/name` of the machine at `report.peer`, if any.
async fn machine_at(
    store: &dyn WorkflowStore,
    observed: Option<&ObservedAddresses>,
    report: &TransferReport,
) -> tinker_core::Result<Option<String>> {
    let hw = match store.hardware_by_ip(report.peer).await? {
        Some(hw) => Some(hw),
        None => match observed.and_then(|o| o.mac_of(report.peer)) {
            Some(mac) => store.hardware_by_mac(mac).await?,
            None => None,
        },
    };
    Ok(hw.map(|hw| {
        format!(
            "{}/{}",
            hw.value.metadata.namespace(),
            hw.value.metadata.name
        )
    }))
}

impl TransferObserver for StoreTransferLog {
    fn transfer_ended(&self, report: TransferReport) {
        let kind = if report.outcome.is_ok() {
            "tftp-sent"
        } else {
            "tftp-abandoned"
        };
        // Admitted by the client's address before any store lookup or task:
        // a client (or a spoofer) ending transfers in a loop costs one lookup
        // a window, not one each. An address is one machine's at a time.
        if !self
            .window
            .admit(&report.peer.to_string(), kind, report.ended)
        {
            return;
        }
        let this = self.clone();
        // In the background: the transfer's task does not wait for the store.
        tokio::spawn(async move {
            let machine = match machine_at(this.store.as_ref(), this.observed.as_deref(), &report)
                .await
            {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(peer = %report.peer, error = %e, "TFTP: store lookup failed");
                    return;
                }
            };
            let millis = report.ended.duration_since(report.started).as_millis();
            let event = MachineEvent::new(
                report.ended,
                machine,
                EventSource::Tftp,
                EventKind::TftpTransfer {
                    file: report.file.chars().take(MAX_RECORDED_FILE).collect(),
                    bytes: report.bytes,
                    millis: u64::try_from(millis.max(0)).unwrap_or(0),
                    failed: report.outcome.err().map(|why| why.to_string()),
                },
            );
            this.events.record(event);
        });
    }
}
