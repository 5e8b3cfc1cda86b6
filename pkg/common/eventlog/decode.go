package eventlog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrBadEventData: event data does not have the structure its type requires.
var ErrBadEventData = errors.New("malformed event data")

// Bounds for decoding, so that a hostile record stays cheap to display.
const (
	maxDevicePathNodes = 64
	maxVariableName    = 1024 // UTF-16 code units
	maxRenderedHex     = 32   // bytes of unknown device path nodes shown
	maxText            = 512  // bytes of string data rendered
)

// GUID is an EFI_GUID in its on-disk (mixed-endian) byte order.
type GUID [16]byte

// String renders the GUID in registry format (first three fields little-endian).
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(g[0:]),
		binary.LittleEndian.Uint16(g[4:]), binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:])
}

// MarshalText renders the GUID as its string in JSON.
func (g GUID) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// Well-known variable GUIDs (UEFI 2.x 3.3 and 32.6).
var (
	EFIGlobalVariable    = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	EFIImageSecurityDBID = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
)

func mustGUID(s string) GUID {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("bad GUID literal " + s)
	}
	var g GUID
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(b[6:]))
	copy(g[8:], b[8:])
	return g
}

// EFIVariable is UEFI_VARIABLE_DATA (PFP 10.4.4, Table 16).
type EFIVariable struct {
	VendorGUID GUID   `json:"guid"`
	Name       string `json:"name"`
	Data       []byte `json:"data"`
}

// ImageLoad is UEFI_IMAGE_LOAD_EVENT (PFP 10.4.4, Table 15). The device path
// is informational: the digest is the Authenticode hash of the image, not a
// hash of this structure, so the path is not bound by the quote.
type ImageLoad struct {
	LocationInMemory uint64 `json:"location"`
	LengthInMemory   uint64 `json:"length"`
	LinkTimeAddress  uint64 `json:"link_time_address"`
	DevicePath       string `json:"device_path"`
}

// FirmwareBlob is UEFI_PLATFORM_FIRMWARE_BLOB (PFP 10.4.4).
type FirmwareBlob struct {
	Base   uint64 `json:"base"`
	Length uint64 `json:"length"`
}

// Decoded is the structured content of one record's data; at most one field
// is set. Text covers EV_EFI_ACTION, EV_ACTION, EV_IPL, EV_S_CRTM_VERSION,
// EV_POST_CODE strings and the EV_NO_ACTION signatures.
type Decoded struct {
	Text      string        `json:"text,omitempty"`
	GUID      *GUID         `json:"guid,omitempty"` // EV_S_CRTM_VERSION given as a GUID
	Variable  *EFIVariable  `json:"variable,omitempty"`
	Image     *ImageLoad    `json:"image,omitempty"`
	Separator *uint32       `json:"separator,omitempty"`
	Blob      *FirmwareBlob `json:"blob,omitempty"`
}

// Summary is a one-line human description.
func (d *Decoded) Summary() string {
	switch {
	case d == nil:
		return ""
	case d.Variable != nil:
		return fmt.Sprintf("%s %s (%d bytes)", d.Variable.VendorGUID, d.Variable.Name, len(d.Variable.Data))
	case d.Image != nil:
		return d.Image.DevicePath
	case d.Separator != nil:
		if *d.Separator == 0 {
			return "separator"
		}
		return fmt.Sprintf("separator 0x%08x (error)", *d.Separator)
	case d.Blob != nil:
		return fmt.Sprintf("blob base 0x%x length 0x%x", d.Blob.Base, d.Blob.Length)
	case d.GUID != nil:
		return d.GUID.String()
	}
	return `"` + d.Text + `"` // already escaped by printable/decodeUTF16
}

// DecodeEventData decodes data for the given event type, assuming 64-bit
// UINTN fields (every UEFI log we have seen). It returns (nil, nil) for types
// it does not decode.
func DecodeEventData(typ EventType, data []byte) (*Decoded, error) {
	return decode(typ, data, 8)
}

// Decode decodes e's data, honouring the UINTN size of the Spec ID event.
func (l *Log) Decode(e *Event) (*Decoded, error) {
	uintn := 8
	if l.SpecID != nil && l.SpecID.UintnSize == 1 {
		uintn = 4
	}
	return decode(e.Type, e.Data, uintn)
}

func decode(typ EventType, data []byte, uintn int) (*Decoded, error) {
	switch typ {
	case EvEFIVariableDriverConf, EvEFIVariableBoot, EvEFIVariableBoot2, EvEFIVariableAuthority:
		v, err := ParseEFIVariable(data)
		if err != nil {
			return nil, err
		}
		return &Decoded{Variable: v}, nil
	case EvEFIBootServicesApp, EvEFIBootServicesDriver, EvEFIRuntimeServicesDrv:
		im, err := parseImageLoad(data, uintn)
		if err != nil {
			return nil, err
		}
		return &Decoded{Image: im}, nil
	case EvSeparator:
		if len(data) != 4 {
			// PFP 10.4.1: the separator's data is a 4-byte value.
			return nil, fmt.Errorf("%w: separator of %d bytes, want 4", ErrBadEventData, len(data))
		}
		v := binary.LittleEndian.Uint32(data)
		return &Decoded{Separator: &v}, nil
	case EvEFIPlatformFWBlob:
		if len(data) != 16 {
			return nil, fmt.Errorf("%w: firmware blob of %d bytes, want 16", ErrBadEventData, len(data))
		}
		return &Decoded{Blob: &FirmwareBlob{Base: binary.LittleEndian.Uint64(data), Length: binary.LittleEndian.Uint64(data[8:])}}, nil
	case EvSCRTMVersion:
		if s, ok := decodeUTF16(data); ok {
			return &Decoded{Text: s}, nil
		}
		if len(data) == 16 {
			// AMI firmware records a GUID here instead of a UCS-2 string.
			var g GUID
			copy(g[:], data)
			return &Decoded{GUID: &g}, nil
		}
		return &Decoded{Text: printable(data)}, nil
	case EvIPL:
		// GRUB logs ASCII, systemd-boot UTF-16LE (PCR12 command lines).
		if s, ok := decodeUTF16(data); ok {
			return &Decoded{Text: s}, nil
		}
		return &Decoded{Text: printable(data)}, nil
	case EvEFIAction, EvAction, EvPostCode, EvEventTag, EvOmitBootDeviceEvents, EvCompactHash:
		return &Decoded{Text: printable(data)}, nil
	case EvNoAction:
		// Signature-led structures: "Spec ID Event03", "StartupLocality",
		// "SP800-155 Event3", "H-CRTM CompMeas", "NvIndexInstance"...
		if i := bytes.IndexByte(data, 0); i > 0 && i <= 24 {
			return &Decoded{Text: printable(data[:i])}, nil
		}
		return nil, nil
	}
	return nil, nil
}

// ParseEFIVariable decodes UEFI_VARIABLE_DATA: VariableName GUID,
// UnicodeNameLength and VariableDataLength (UINT64), the CHAR16 name, then
// the data. The lengths must consume the record exactly.
func ParseEFIVariable(b []byte) (*EFIVariable, error) {
	v, err := parseEFIVariableHeader(b)
	if err != nil {
		return nil, err
	}
	nameLen := binary.LittleEndian.Uint64(b[16:])
	dataLen := binary.LittleEndian.Uint64(b[24:])
	if rest := uint64(len(b)-32) - nameLen*2; dataLen != rest {
		return nil, fmt.Errorf("%w: variable data length %d, record leaves %d", ErrBadEventData, dataLen, rest)
	}
	v.Data = b[32+2*nameLen:]
	return v, nil
}

// parseEFIVariableHeader decodes the GUID and name of UEFI_VARIABLE_DATA
// without requiring VariableDataLength to end the record (Data is left
// nil): for records whose length is known to be off (QuirkAuthorityTrailingByte).
func parseEFIVariableHeader(b []byte) (*EFIVariable, error) {
	if len(b) < 32 {
		return nil, fmt.Errorf("%w: UEFI_VARIABLE_DATA of %d bytes, need 32", ErrBadEventData, len(b))
	}
	v := &EFIVariable{}
	copy(v.VendorGUID[:], b)
	nameLen := binary.LittleEndian.Uint64(b[16:])
	rest := uint64(len(b) - 32)
	if nameLen > maxVariableName || nameLen*2 > rest {
		return nil, fmt.Errorf("%w: variable name of %d chars does not fit", ErrBadEventData, nameLen)
	}
	name := make([]uint16, nameLen)
	for i := range name {
		name[i] = binary.LittleEndian.Uint16(b[32+2*i:])
	}
	v.Name = strings.TrimRight(string(utf16.Decode(name)), "\x00")
	return v, nil
}

func parseImageLoad(b []byte, uintn int) (*ImageLoad, error) {
	hdr := 8 + 3*uintn
	if len(b) < hdr {
		return nil, fmt.Errorf("%w: image load event of %d bytes, need %d", ErrBadEventData, len(b), hdr)
	}
	rd := func(off int) uint64 {
		if uintn == 4 {
			return uint64(binary.LittleEndian.Uint32(b[off:]))
		}
		return binary.LittleEndian.Uint64(b[off:])
	}
	im := &ImageLoad{LocationInMemory: binary.LittleEndian.Uint64(b), LengthInMemory: rd(8), LinkTimeAddress: rd(8 + uintn)}
	dpLen := rd(8 + 2*uintn)
	if dpLen > uint64(len(b)-hdr) {
		return nil, fmt.Errorf("%w: device path length %d, %d bytes left", ErrBadEventData, dpLen, len(b)-hdr)
	}
	dp, err := DevicePathString(b[hdr : hdr+int(dpLen)])
	if err != nil {
		return nil, err
	}
	im.DevicePath = dp
	return im, nil
}

// DevicePathString renders an EFI device path (UEFI 2.x section 10) in the
// usual text form for the node types boot logs contain; other nodes are shown
// as Path(type,subtype,hex). At most maxDevicePathNodes nodes are read.
func DevicePathString(b []byte) (string, error) {
	var parts []string
	for n := 0; len(b) > 0; n++ {
		if n >= maxDevicePathNodes {
			return "", fmt.Errorf("%w: device path has more than %d nodes", ErrBadEventData, maxDevicePathNodes)
		}
		if len(b) < 4 {
			return "", fmt.Errorf("%w: device path node header truncated", ErrBadEventData)
		}
		typ, sub, l := b[0], b[1], int(binary.LittleEndian.Uint16(b[2:]))
		if l < 4 || l > len(b) {
			return "", fmt.Errorf("%w: device path node length %d (%d bytes left)", ErrBadEventData, l, len(b))
		}
		body := b[4:l]
		b = b[l:]
		if typ == 0x7F {
			if sub == 0xFF {
				break // end of the whole path
			}
			parts = append(parts, "|") // end of one instance
			continue
		}
		parts = append(parts, devicePathNode(typ, sub, body))
	}
	return strings.Join(parts, "/"), nil
}

func devicePathNode(typ, sub byte, d []byte) string {
	switch {
	case typ == 1 && sub == 1 && len(d) == 2:
		return fmt.Sprintf("Pci(0x%x,0x%x)", d[1], d[0])
	case typ == 2 && sub == 1 && len(d) == 8:
		hid, uid := binary.LittleEndian.Uint32(d), binary.LittleEndian.Uint32(d[4:])
		if hid == 0x0A0341D0 || hid == 0x0A0841D0 {
			return fmt.Sprintf("PciRoot(0x%x)", uid)
		}
		return fmt.Sprintf("Acpi(0x%08x,0x%x)", hid, uid)
	case typ == 4 && sub == 1 && len(d) == 38:
		num := binary.LittleEndian.Uint32(d)
		var g GUID
		copy(g[:], d[20:36])
		if d[37] == 2 {
			return fmt.Sprintf("HD(%d,GPT,%s)", num, g)
		}
		return fmt.Sprintf("HD(%d,MBR,0x%08x)", num, binary.LittleEndian.Uint32(d[20:]))
	case typ == 4 && sub == 8 && len(d) == 20:
		return fmt.Sprintf("Offset(0x%x,0x%x)", binary.LittleEndian.Uint64(d[4:]), binary.LittleEndian.Uint64(d[12:]))
	case typ == 4 && sub == 4:
		if s, ok := decodeUTF16(d); ok {
			return s
		}
	case (typ == 4 && (sub == 3 || sub == 6 || sub == 7)) && len(d) >= 16:
		var g GUID
		copy(g[:], d)
		name := map[byte]string{3: "VenMedia", 6: "FvFile", 7: "Fv"}[sub]
		return fmt.Sprintf("%s(%s)", name, g)
	}
	h := d
	if len(h) > maxRenderedHex {
		h = h[:maxRenderedHex]
	}
	return fmt.Sprintf("Path(%d,%d,%x)", typ, sub, h)
}

// decodeUTF16 accepts NUL-terminated or unterminated UTF-16LE text that is
// printable, so that ASCII data is not misread as UTF-16.
func decodeUTF16(b []byte) (string, bool) {
	if len(b) < 2 || len(b)%2 != 0 {
		return "", false
	}
	// ASCII has no interior NUL bytes; UTF-16 text from firmware nearly
	// always does (ASCII-range code units). Without this, even-length ASCII
	// would decode as CJK.
	if t := bytes.TrimRight(b, "\x00"); len(t) > 0 && bytes.IndexByte(t, 0) < 0 {
		return "", false
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	s := string(utf16.Decode(u))
	for _, r := range s {
		if r == utf8.RuneError || (!unicode.IsPrint(r) && !unicode.IsSpace(r)) {
			return "", false
		}
	}
	return s, true
}

// printable trims trailing NULs and escapes anything unprintable, so that
// logs cannot inject terminal control sequences into `tpmid eventlog show`.
// At most maxText input bytes are rendered; the rest is counted.
func printable(b []byte) string {
	const hexdigits = "0123456789abcdef"
	b = bytes.TrimRight(b, "\x00")
	more := 0
	if len(b) > maxText {
		b, more = b[:maxText], len(b)-maxText
	}
	var sb strings.Builder
	sb.Grow(len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError || (!unicode.IsPrint(r) && r != ' ') {
			for _, c := range b[:n] {
				sb.WriteString(`\x`)
				sb.WriteByte(hexdigits[c>>4])
				sb.WriteByte(hexdigits[c&0xf])
			}
		} else {
			sb.WriteRune(r)
		}
		b = b[n:]
	}
	if more > 0 {
		fmt.Fprintf(&sb, "...(+%d bytes)", more)
	}
	return sb.String()
}
