//! The Redfish resources Tinker reads and writes (DSP0268), as serde types. Only
//! the properties Tinker uses are read; values outside the enumerations Tinker
//! knows read as `Other` (or keep their text where a message names them), so a
//! BMC newer than this code still parses.

use serde::{Deserialize, Deserializer, Serialize};

/// A link to another resource.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Link {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
}

/// A resource collection (`/redfish/v1/Systems`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Collection {
    #[serde(deserialize_with = "null_as_default")]
    pub members: Vec<Link>,
}

/// A `ComputerSystem`: the parts Tinker reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct ComputerSystem {
    pub power_state: Option<SystemPowerState>,
    #[serde(deserialize_with = "null_as_default")]
    pub boot: Boot,
    #[serde(deserialize_with = "null_as_default")]
    pub actions: SystemActions,
}

/// Reads `null` as the default value, as an absent property reads: some BMCs
/// send `"Boot": null` where others leave the property out.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// `ComputerSystem.PowerState`; an unknown value keeps its text for the message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub(super) enum SystemPowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    Other(String),
}

impl From<String> for SystemPowerState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "On" => SystemPowerState::On,
            "Off" => SystemPowerState::Off,
            "PoweringOn" => SystemPowerState::PoweringOn,
            "PoweringOff" => SystemPowerState::PoweringOff,
            "Paused" => SystemPowerState::Paused,
            _ => SystemPowerState::Other(s),
        }
    }
}

/// `ComputerSystem.Boot`: the boot source override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Boot {
    pub boot_source_override_target: Option<BootTarget>,
    pub boot_source_override_enabled: Option<OverrideEnabled>,
    /// Outer `Some` when the system has the property at all (even `null`): only
    /// then may a PATCH name a mode, since some BMCs refuse the key.
    #[serde(deserialize_with = "present")]
    pub boot_source_override_mode: Option<Option<BootMode>>,
}

/// Reads a property that is there (even as `null`) as `Some`; an absent one
/// stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `BootSourceOverrideTarget`: the devices Tinker sets, and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum BootTarget {
    Pxe,
    Hdd,
    BiosSetup,
    /// Any other target (`None`, `Cd`, `Usb`, `UefiHttp`, ...); never sent.
    #[serde(other)]
    Other,
}

/// `BootSourceOverrideEnabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum OverrideEnabled {
    Disabled,
    Once,
    Continuous,
    #[serde(other)]
    Other,
}

/// `BootSourceOverrideMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum BootMode {
    Legacy,
    #[serde(rename = "UEFI")]
    Uefi,
    #[serde(other)]
    Other,
}

/// The body of the PATCH that sets the boot override.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SystemPatch {
    pub boot: BootPatch,
}

/// The boot override to set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct BootPatch {
    pub boot_source_override_target: BootTarget,
    pub boot_source_override_enabled: OverrideEnabled,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_source_override_mode: Option<BootMode>,
}

/// `ComputerSystem.Actions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

/// The `#ComputerSystem.Reset` action: where to POST, and the types allowed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ResetAction {
    pub target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub allowable_values: Option<Vec<ResetType>>,
}

/// `ResetType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum ResetType {
    On,
    ForceOn,
    ForceOff,
    GracefulShutdown,
    GracefulRestart,
    ForceRestart,
    PowerCycle,
    FullPowerCycle,
    Nmi,
    PushPowerButton,
    Suspend,
    Pause,
    Resume,
    /// A type this code does not know; never sent.
    #[serde(other)]
    Other,
}

/// The body of the reset action's POST.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ResetRequest {
    pub reset_type: ResetType,
}

/// The body of a session login (`POST /redfish/v1/SessionService/Sessions`).
/// No `Debug`: it holds the password, exposed only to be serialized.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SessionLogin<'a> {
    pub user_name: &'a str,
    pub password: &'a str,
}

/// A Task, as a BMC may answer a long action with `202 Accepted`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Task {
    pub task_state: Option<TaskState>,
    pub messages: Vec<MessageInfo>,
}

/// `TaskState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) enum TaskState {
    New,
    Starting,
    Running,
    Suspended,
    Interrupted,
    Pending,
    Stopping,
    Completed,
    Killed,
    Exception,
    Service,
    Cancelling,
    Cancelled,
    #[serde(other)]
    Other,
}

impl Task {
    /// Whether the task has already ended without doing its job.
    pub fn failed(&self) -> bool {
        matches!(
            self.task_state,
            Some(TaskState::Exception | TaskState::Killed | TaskState::Cancelled)
        )
    }
}

/// A Redfish error answer: `{"error": {...}}`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ErrorResponse {
    pub error: ErrorBody,
}

/// The body of an error answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorBody {
    pub message: Option<String>,
    #[serde(rename = "@Message.ExtendedInfo")]
    pub extended_info: Vec<MessageInfo>,
}

/// One message of a registry (`@Message.ExtendedInfo`, `Task.Messages`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct MessageInfo {
    pub message: Option<String>,
}

impl ErrorResponse {
    /// The most specific message: the first extended one, else the summary.
    pub fn message(&self) -> Option<&str> {
        self.error
            .extended_info
            .first()
            .and_then(|m| m.message.as_deref())
            .or(self.error.message.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_computer_system() {
        let sys: ComputerSystem = serde_json::from_str(
            r##"{"PowerState": "PoweringOn", "Boot": {"BootSourceOverrideTarget": "UefiHttp",
                "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": null},
                "Actions": {"#ComputerSystem.Reset": {"target": "/r",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "SomethingNew"]}}}"##,
        )
        .unwrap();
        assert_eq!(sys.power_state, Some(SystemPowerState::PoweringOn));
        assert_eq!(
            sys.boot.boot_source_override_target,
            Some(BootTarget::Other)
        );
        assert_eq!(
            sys.boot.boot_source_override_mode,
            Some(None),
            "present, null"
        );
        let reset = sys.actions.reset.unwrap();
        assert_eq!(reset.target.as_deref(), Some("/r"));
        assert_eq!(
            reset.allowable_values.unwrap(),
            [ResetType::On, ResetType::ForceOff, ResetType::Other]
        );

        let bare: ComputerSystem =
            serde_json::from_str(r#"{"PowerState": "Dozing", "Boot": null}"#).unwrap();
        assert_eq!(
            bare.power_state,
            Some(SystemPowerState::Other("Dozing".into()))
        );
        assert_eq!(bare.boot.boot_source_override_mode, None, "absent");
        assert!(bare.actions.reset.is_none());
    }

    #[test]
    fn writes_what_the_bmc_expects() {
        let patch = SystemPatch {
            boot: BootPatch {
                boot_source_override_target: BootTarget::Pxe,
                boot_source_override_enabled: OverrideEnabled::Once,
                boot_source_override_mode: Some(BootMode::Uefi),
            },
        };
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"UEFI"}}"#
        );
        let reset = ResetRequest {
            reset_type: ResetType::PowerCycle,
        };
        assert_eq!(
            serde_json::to_string(&reset).unwrap(),
            r#"{"ResetType":"PowerCycle"}"#
        );
    }

    #[test]
    fn reads_error_and_task_bodies() {
        let e: ErrorResponse = serde_json::from_str(
            r#"{"error": {"code": "Base.1.8.GeneralError", "message": "A general error",
                "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueNotInList",
                "Message": "The value Foo is not in the list"}]}}"#,
        )
        .unwrap();
        assert_eq!(e.message(), Some("The value Foo is not in the list"));
        let e: ErrorResponse =
            serde_json::from_str(r#"{"error": {"message": "bad credentials"}}"#).unwrap();
        assert_eq!(e.message(), Some("bad credentials"));

        let t: Task = serde_json::from_str(
            r#"{"TaskState": "Exception", "Messages": [{"Message": "BIOS busy"}]}"#,
        )
        .unwrap();
        assert!(t.failed());
        assert_eq!(t.messages[0].message.as_deref(), Some("BIOS busy"));
        let t: Task = serde_json::from_str(r#"{"TaskState": "Running"}"#).unwrap();
        assert!(!t.failed());
    }
}
