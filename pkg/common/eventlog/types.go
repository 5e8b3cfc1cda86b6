package eventlog

import "fmt"

// EventType is a TCG event type (PFP 10.4.1, Table 9, and the EFI types of
// Table 10).
type EventType uint32

// Event types from the PC Client Platform Firmware Profile.
const (
	EvPrebootCert           EventType = 0x00000000
	EvPostCode              EventType = 0x00000001
	EvUnused                EventType = 0x00000002
	EvNoAction              EventType = 0x00000003
	EvSeparator             EventType = 0x00000004
	EvAction                EventType = 0x00000005
	EvEventTag              EventType = 0x00000006
	EvSCRTMContents         EventType = 0x00000007
	EvSCRTMVersion          EventType = 0x00000008
	EvCPUMicrocode          EventType = 0x00000009
	EvPlatformConfigFlags   EventType = 0x0000000A
	EvTableOfDevices        EventType = 0x0000000B
	EvCompactHash           EventType = 0x0000000C
	EvIPL                   EventType = 0x0000000D
	EvIPLPartitionData      EventType = 0x0000000E
	EvNonhostCode           EventType = 0x0000000F
	EvNonhostConfig         EventType = 0x00000010
	EvNonhostInfo           EventType = 0x00000011
	EvOmitBootDeviceEvents  EventType = 0x00000012
	EvPostCode2             EventType = 0x00000013
	EvEFIEventBase          EventType = 0x80000000
	EvEFIVariableDriverConf EventType = 0x80000001
	EvEFIVariableBoot       EventType = 0x80000002
	EvEFIBootServicesApp    EventType = 0x80000003
	EvEFIBootServicesDriver EventType = 0x80000004
	EvEFIRuntimeServicesDrv EventType = 0x80000005
	EvEFIGPTEvent           EventType = 0x80000006
	EvEFIAction             EventType = 0x80000007
	EvEFIPlatformFWBlob     EventType = 0x80000008
	EvEFIHandoffTables      EventType = 0x80000009
	EvEFIPlatformFWBlob2    EventType = 0x8000000A
	EvEFIHandoffTables2     EventType = 0x8000000B
	EvEFIVariableBoot2      EventType = 0x8000000C
	EvEFIGPTEvent2          EventType = 0x8000000D
	EvEFIHCRTMEvent         EventType = 0x80000010
	EvEFIVariableAuthority  EventType = 0x800000E0
	EvEFISPDMFirmwareBlob   EventType = 0x800000E1
	EvEFISPDMFirmwareConfig EventType = 0x800000E2
	EvEFISPDMDevicePolicy   EventType = 0x800000E3
	EvEFISPDMDeviceAuth     EventType = 0x800000E4
)

var eventTypeNames = map[EventType]string{
	EvPrebootCert: "EV_PREBOOT_CERT", EvPostCode: "EV_POST_CODE", EvUnused: "EV_UNUSED",
	EvNoAction: "EV_NO_ACTION", EvSeparator: "EV_SEPARATOR", EvAction: "EV_ACTION",
	EvEventTag: "EV_EVENT_TAG", EvSCRTMContents: "EV_S_CRTM_CONTENTS", EvSCRTMVersion: "EV_S_CRTM_VERSION",
	EvCPUMicrocode: "EV_CPU_MICROCODE", EvPlatformConfigFlags: "EV_PLATFORM_CONFIG_FLAGS",
	EvTableOfDevices: "EV_TABLE_OF_DEVICES", EvCompactHash: "EV_COMPACT_HASH", EvIPL: "EV_IPL",
	EvIPLPartitionData: "EV_IPL_PARTITION_DATA", EvNonhostCode: "EV_NONHOST_CODE",
	EvNonhostConfig: "EV_NONHOST_CONFIG", EvNonhostInfo: "EV_NONHOST_INFO",
	EvOmitBootDeviceEvents: "EV_OMIT_BOOT_DEVICE_EVENTS", EvPostCode2: "EV_POST_CODE2",
	EvEFIEventBase: "EV_EFI_EVENT_BASE", EvEFIVariableDriverConf: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	EvEFIVariableBoot: "EV_EFI_VARIABLE_BOOT", EvEFIBootServicesApp: "EV_EFI_BOOT_SERVICES_APPLICATION",
	EvEFIBootServicesDriver: "EV_EFI_BOOT_SERVICES_DRIVER", EvEFIRuntimeServicesDrv: "EV_EFI_RUNTIME_SERVICES_DRIVER",
	EvEFIGPTEvent: "EV_EFI_GPT_EVENT", EvEFIAction: "EV_EFI_ACTION",
	EvEFIPlatformFWBlob: "EV_EFI_PLATFORM_FIRMWARE_BLOB", EvEFIHandoffTables: "EV_EFI_HANDOFF_TABLES",
	EvEFIPlatformFWBlob2: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", EvEFIHandoffTables2: "EV_EFI_HANDOFF_TABLES2",
	EvEFIVariableBoot2: "EV_EFI_VARIABLE_BOOT2", EvEFIGPTEvent2: "EV_EFI_GPT_EVENT2",
	EvEFIHCRTMEvent: "EV_EFI_HCRTM_EVENT", EvEFIVariableAuthority: "EV_EFI_VARIABLE_AUTHORITY",
	EvEFISPDMFirmwareBlob: "EV_EFI_SPDM_FIRMWARE_BLOB", EvEFISPDMFirmwareConfig: "EV_EFI_SPDM_FIRMWARE_CONFIG",
	EvEFISPDMDevicePolicy: "EV_EFI_SPDM_DEVICE_POLICY", EvEFISPDMDeviceAuth: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

// String returns the spec name ("EV_SEPARATOR"), or the hex value for
// types the PFP does not define.
func (t EventType) String() string {
	if n, ok := eventTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EV_UNKNOWN_0x%08X", uint32(t))
}

// Quirk names a deviation from a plain replay that tpmid handles on purpose.
// Quirks are facts for policy: none is applied silently.
type Quirk string

const (
	// QuirkStartupLocality: an EV_NO_ACTION "StartupLocality" event
	// (PFP 10.4.5.3) set PCR0's initial value to 00..0N instead of zero.
	QuirkStartupLocality Quirk = "startup-locality"
	// QuirkHCRTM: the first PCR0 event is EV_EFI_HCRTM_EVENT, so PCR0 was
	// reset at locality 4 by TPM2_HashStart (PFP 10.4.5.3, 2.3.4) and starts at
	// 00..04 even without a StartupLocality event.
	QuirkHCRTM Quirk = "h-crtm"
	// QuirkNoActionDigests: EV_NO_ACTION records (e.g. SP800-155 Event3
	// reference-measurement events) carry non-zero digests. PFP 10.4.1: they
	// are never extended, and Replay does not extend them.
	QuirkNoActionDigests Quirk = "no-action-with-digests"
	// QuirkSP800155: EV_NO_ACTION "SP800-155 Event3" reference-measurement
	// records are present (GCE Virtual Firmware v2). They describe expected
	// firmware, are not measurements, and are not extended (PFP 10.4.1).
	QuirkSP800155 Quirk = "sp800-155-event3"
	// QuirkIncompleteBank: a bank listed in the Spec ID event is missing from
	// some extending record, so it cannot be replayed and is left out.
	QuirkIncompleteBank Quirk = "bank-missing-digests"
	// QuirkTrailerRecord: a record with PCR index 0xFFFFFFFF (appended by
	// Windows) was skipped; no PCR has that index.
	QuirkTrailerRecord Quirk = "pcr-0xffffffff-trailer"
	// QuirkDRTMPCR: the log extends a DRTM PCR (17-22). Replay starts them at
	// zero, which is only right after a dynamic launch reset them.
	QuirkDRTMPCR Quirk = "drtm-pcr-extended"
	// QuirkEBSMissing: the log lacks the ExitBootServices EV_EFI_ACTION
	// events in PCR5, a known firmware bug; PCR5 matched the quote only
	// after appending them (reported by VerifyAgainst).
	QuirkEBSMissing Quirk = "exit-boot-services-missing"
	// QuirkSecureBootEmpty: the SecureBoot variable was measured with zero
	// bytes of data (and its digest does not match its data); reported by
	// SecureBoot, which then says Disabled.
	QuirkSecureBootEmpty Quirk = "secureboot-variable-empty"
	// QuirkBootVariableDataOnly: EV_EFI_VARIABLE_BOOT(2) digests are the
	// hash of the variable's data only, not of the whole UEFI_VARIABLE_DATA
	// (EDK2 and every real UEFI log we have); reported by CheckDigests.
	QuirkBootVariableDataOnly Quirk = "boot-variable-digest-data-only"
	// QuirkAuthorityTrailingByte: an EV_EFI_VARIABLE_AUTHORITY record's
	// digest covers all of its data but the last byte (shim 15 and Google's
	// COS loader log one byte more than they measure, so the UEFI_VARIABLE_DATA
	// lengths do not add up either); that byte is not bound by the quote.
	QuirkAuthorityTrailingByte Quirk = "authority-digest-excludes-last-byte"
)
