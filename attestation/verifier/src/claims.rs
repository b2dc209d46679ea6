//! What authenticated evidence says, in one shape for every TEE. Platforms fill these in; the
//! pipeline appraises them; only the pipeline can wrap them in [`crate::Verified`].

use nacre_wire::Tee;
use nacre_wire::snp::{SnpReport, TcbVersion};

use nacre_wire::snp::Product;

/// Claims common to every TEE, plus the platform's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub tee: Tee,
    /// SNP: MEASUREMENT (launch digest). TDX: MRTD.
    pub measurement: [u8; 48],
    /// The 64 bytes the guest bound into the evidence.
    pub report_data: [u8; 64],
    /// SNP: guest policy DEBUG bit. TDX: TD attribute DEBUG.
    pub debug: bool,
    /// Time windows the evidence depends on (certificates, CRLs); the pipeline checks them
    /// against its clock.
    pub validity: Vec<Validity>,
    /// Accepted but noteworthy conditions (missing CRL, sim root, unbound REPORT_DATA).
    pub warnings: Vec<String>,
    pub platform: PlatformClaims,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformClaims {
    Snp(Box<SnpClaims>),
    Tdx(Box<TdxClaims>),
}

/// A validity window of one piece of collateral, in Unix seconds, inclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub what: &'static str,
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of(what: &'static str, (not_before, not_after): (i64, i64)) -> Self {
        Validity { what, not_before, not_after }
    }
}

/// SEV-SNP (and sim) claims: the whole parsed report and its decoded TCBs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpClaims {
    pub product: Product,
    pub report: SnpReport,
    pub reported_tcb: TcbVersion,
    pub committed_tcb: TcbVersion,
    pub current_tcb: TcbVersion,
    pub launch_tcb: TcbVersion,
    pub crl_checked: bool,
}

/// Intel TDX claims from a verified quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxClaims {
    pub tcb_status: TdxTcbStatus,
    pub advisory_ids: Vec<String>,
    pub td: TdReport,
    /// The TD's event log, when the evidence carried one: it replayed to the quote's RTMR0-3,
    /// so each event's digest is what the TD's registers were extended with, in this order.
    pub event_log: Option<Vec<LoggedEvent>>,
}

/// One event of a TD's event log whose replay matched the quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Position in the log (0 = the first event after the Spec ID header).
    pub index: usize,
    /// The RTMR (0-3) the event extended; `None` for `EV_NO_ACTION`, which is logged only.
    pub rtmr: Option<u8>,
    /// TCG event type (`nacre_wire::ccel::event_type`).
    pub event_type: u32,
    /// The SHA-384 digest extended into the register.
    pub digest: [u8; 48],
    /// A short printable rendering of the event data where it is text (EFI action strings, the
    /// separator, EFI variable names, firmware-blob labels). Unauthenticated unless
    /// [`LoggedEvent::data_is_digested`]: the replay covers the digest, not the data.
    pub description: Option<String>,
    /// Whether `digest` is the SHA-384 of the event data (for boot variables, of the variable's
    /// data), so the description shows what was measured.
    pub data_is_digested: bool,
}

impl LoggedEvent {
    /// The TCG name of the event type (`EV_EFI_ACTION`, ...), if it has one.
    pub fn event_type_name(&self) -> Option<&'static str> {
        nacre_wire::ccel::event_type::name(self.event_type)
    }
}

/// The TD report fields of a quote (TDX Module ABI, TDREPORT / TD_INFO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    pub quote_version: u16,
    pub mrtd: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    pub mrconfigid: [u8; 48],
    pub mrowner: [u8; 48],
    pub mrownerconfig: [u8; 48],
    pub mrseam: [u8; 48],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub tee_tcb_svn: [u8; 16],
}

impl TdReport {
    /// TDATTRIBUTES.TUD.DEBUG (bit 0).
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }
}

/// The TCB status Intel's collateral gives the platform (and QE), converged as in Intel's QVL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TdxTcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    TDRelaunchAdvised,
    TDRelaunchAdvisedConfigurationNeeded,
    Revoked,
}

impl TdxTcbStatus {
    pub const ALL: [TdxTcbStatus; 9] = [
        TdxTcbStatus::UpToDate,
        TdxTcbStatus::SWHardeningNeeded,
        TdxTcbStatus::ConfigurationNeeded,
        TdxTcbStatus::ConfigurationAndSWHardeningNeeded,
        TdxTcbStatus::OutOfDate,
        TdxTcbStatus::OutOfDateConfigurationNeeded,
        TdxTcbStatus::TDRelaunchAdvised,
        TdxTcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        TdxTcbStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TdxTcbStatus::UpToDate => "UpToDate",
            TdxTcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TdxTcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TdxTcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TdxTcbStatus::OutOfDate => "OutOfDate",
            TdxTcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TdxTcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TdxTcbStatus::TDRelaunchAdvisedConfigurationNeeded => "TDRelaunchAdvisedConfigurationNeeded",
            TdxTcbStatus::Revoked => "Revoked",
        }
    }

    /// Parses the exact status names Intel's collateral uses; anything else is unknown.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}
