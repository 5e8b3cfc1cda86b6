package demo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf16"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// BootOptions describe the measured boot the harness performs.
type BootOptions struct {
	Banks      []pcrs.Alg // log and extend these banks; default SHA-1 and SHA-256
	SecureBoot bool       // the SecureBoot variable measured into PCR7
	Kernel     string     // file measured as the kernel; default: a readable /boot/vmlinuz-*, else spire-agent
	Loader     string     // file measured as the boot loader; default: a readable shim/grub EFI binary, else the kernel
}

// Measurement is one event the boot measured, for the progress output.
type Measurement struct {
	PCR  uint32
	Type eventlog.EventType
	What string
}

// Boot is the result of a measured boot: the log and what to extend.
type Boot struct {
	Log     []byte
	Events  []Measurement
	Extends []Extend // in order
	Kernel  string   // the files that were measured
	Loader  string
}

// Extend is one PCR extension the TPM must receive for the log to replay.
type Extend struct {
	PCR     int
	Digests map[pcrs.Alg][]byte
}

// ucs2z encodes s as NUL-terminated UTF-16LE, as firmware strings are.
func ucs2z(s string) []byte {
	var b bytes.Buffer
	for _, c := range utf16.Encode([]rune(s)) {
		binary.Write(&b, binary.LittleEndian, c)
	}
	b.Write([]byte{0, 0})
	return b.Bytes()
}

// imageLoadEvent encodes UEFI_IMAGE_LOAD_EVENT (PFP 10.4.3) with a media
// file-path device path naming path.
func imageLoadEvent(size int64, path string) []byte {
	// FILEPATH_DEVICE_PATH (type 4 media, subtype 4) + end of path.
	name := ucs2z(path)
	var dp bytes.Buffer
	dp.Write([]byte{0x04, 0x04})
	binary.Write(&dp, binary.LittleEndian, uint16(4+len(name)))
	dp.Write(name)
	dp.Write([]byte{0x7f, 0xff, 0x04, 0x00})
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(0x10000000)) // ImageLocationInMemory
	binary.Write(&b, binary.LittleEndian, uint64(size))       // ImageLengthInMemory
	binary.Write(&b, binary.LittleEndian, uint64(0))          // ImageLinkTimeAddress
	binary.Write(&b, binary.LittleEndian, uint64(dp.Len()))   // LengthOfDevicePath
	b.Write(dp.Bytes())
	return b.Bytes()
}

// fileDigests hashes a whole file in every bank. A real firmware measures
// the Authenticode hash of a PE image; the harness hashes the file bytes,
// which works for any file and is what a verifier compares with a
// reference it computed the same way.
func fileDigests(path string, banks []pcrs.Alg) (map[pcrs.Alg][]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var ws []io.Writer
	hs := map[pcrs.Alg]interface{ Sum([]byte) []byte }{}
	for _, a := range banks {
		h, err := a.New()
		if err != nil {
			return nil, 0, err
		}
		hs[a] = h
		ws = append(ws, h)
	}
	n, err := io.Copy(io.MultiWriter(ws...), f)
	if err != nil {
		return nil, 0, err
	}
	d := map[pcrs.Alg][]byte{}
	for a, h := range hs {
		d[a] = h.Sum(nil)
	}
	return d, n, nil
}

func readable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [1]byte
	_, err = f.Read(b[:])
	return err == nil
}

// defaultKernel picks the newest readable /boot/vmlinuz-*, else fallback.
func defaultKernel(fallback string) string {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		if readable(k) {
			return k
		}
	}
	return fallback
}

func defaultLoader(fallback string) string {
	for _, pattern := range []string{
		"/boot/efi/EFI/*/shimx64.efi", "/usr/lib/shim/shimx64.efi*",
		"/boot/efi/EFI/*/grubx64.efi", "/usr/lib/grub/x86_64-efi-signed/grubx64.efi*",
	} {
		ms, _ := filepath.Glob(pattern)
		for _, m := range ms {
			if readable(m) {
				return m
			}
		}
	}
	return fallback
}

// MeasureBoot builds the event log of a UEFI boot the way firmware and a
// boot loader write it, measuring real files as the boot applications.
// fallback is used as the kernel when no /boot/vmlinuz-* is readable (the
// harness passes the spire-agent binary).
func MeasureBoot(o BootOptions, fallback string) (*Boot, error) {
	banks := o.Banks
	if len(banks) == 0 {
		banks = []pcrs.Alg{pcrs.SHA1, pcrs.SHA256}
	}
	kernel := o.Kernel
	if kernel == "" {
		kernel = defaultKernel(fallback)
	}
	loader := o.Loader
	if loader == "" {
		loader = defaultLoader(kernel)
	}
	b, err := eventlog.NewBuilder(banks...)
	if err != nil {
		return nil, err
	}
	boot := &Boot{Kernel: kernel, Loader: loader}
	add := func(pcr uint32, typ eventlog.EventType, data []byte, what string) {
		if d := b.Extend(pcr, typ, data); d != nil {
			boot.Extends = append(boot.Extends, Extend{PCR: int(pcr), Digests: d})
		}
		boot.Events = append(boot.Events, Measurement{pcr, typ, what})
	}
	addFile := func(pcr uint32, typ eventlog.EventType, path, devicePath string) error {
		d, n, err := fileDigests(path, banks)
		if err != nil {
			return fmt.Errorf("measuring %s: %w", path, err)
		}
		if err := b.ExtendDigest(pcr, typ, d, imageLoadEvent(n, devicePath)); err != nil {
			return err
		}
		boot.Extends = append(boot.Extends, Extend{PCR: int(pcr), Digests: d})
		boot.Events = append(boot.Events, Measurement{pcr, typ, path})
		return nil
	}

	// SEC/PEI: the CRTM version and the platform firmware volume (PCR0).
	b.StartupLocality(0)
	add(0, eventlog.EvSCRTMVersion, ucs2z("tpmid demo firmware 1.0"), "S-CRTM version")
	fw := bytes.Repeat([]byte("tpmid demo firmware volume\x00"), 64)
	var blob bytes.Buffer
	binary.Write(&blob, binary.LittleEndian, uint64(0xffc00000)) // BlobBase
	binary.Write(&blob, binary.LittleEndian, uint64(len(fw)))    // BlobLength
	fwd := map[pcrs.Alg][]byte{}
	for _, a := range banks {
		h, _ := a.New()
		h.Write(fw)
		fwd[a] = h.Sum(nil)
	}
	if err := b.ExtendDigest(0, eventlog.EvEFIPlatformFWBlob, fwd, blob.Bytes()); err != nil {
		return nil, err
	}
	boot.Extends = append(boot.Extends, Extend{PCR: 0, Digests: fwd})
	boot.Events = append(boot.Events, Measurement{0, eventlog.EvEFIPlatformFWBlob, "firmware volume"})

	// DXE: the Secure Boot policy (PCR7).
	sb := byte(0)
	if o.SecureBoot {
		sb = 1
	}
	add(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{sb}), fmt.Sprintf("SecureBoot=%d", sb))
	for _, v := range []struct {
		guid eventlog.GUID
		name string
	}{{eventlog.EFIGlobalVariable, "PK"}, {eventlog.EFIGlobalVariable, "KEK"}, {eventlog.EFIImageSecurityDBID, "db"}, {eventlog.EFIImageSecurityDBID, "dbx"}} {
		add(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(v.guid, v.name, nil), v.name)
	}

	// BDS, ReadyToBoot: the boot attempt and the separators of PCRs 0-7.
	add(4, eventlog.EvEFIAction, []byte("Calling EFI Application from Boot Option"), "boot option")
	for pcr := uint32(0); pcr < 8; pcr++ {
		add(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0}, "separator")
	}
	// The boot loader, then the kernel it starts (PCR4).
	if loader != kernel {
		if err := addFile(4, eventlog.EvEFIBootServicesApp, loader, `\EFI\debian\shimx64.efi`); err != nil {
			return nil, err
		}
	}
	if err := addFile(4, eventlog.EvEFIBootServicesApp, kernel, `\`+filepath.Base(kernel)); err != nil {
		return nil, err
	}
	// The OS takes over (PCR5).
	add(5, eventlog.EvEFIAction, []byte("Exit Boot Services Invocation"), "ExitBootServices")
	add(5, eventlog.EvEFIAction, []byte("Exit Boot Services Returned with Success"), "ExitBootServices returned")

	if err := b.Err(); err != nil {
		return nil, err
	}
	boot.Log = b.Bytes()
	// Self-check: the log must parse and replay before a TPM sees it.
	l, err := eventlog.Parse(boot.Log)
	if err != nil {
		return nil, fmt.Errorf("built event log does not parse: %w", err)
	}
	if _, err := l.Replay(); err != nil {
		return nil, fmt.Errorf("built event log does not replay: %w", err)
	}
	return boot, nil
}
