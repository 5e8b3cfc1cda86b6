package tpm

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Config says which TPM to open and where its event log is.
type Config struct {
	// Device is "" (autodetect /dev/tpmrm0, then /dev/tpm0), an absolute
	// path to a TPM character device, "tcp://host:port" (the data port of
	// swtpm or another raw TPM command server), "unix:///path" (swtpm's
	// unixio data socket) or "simulator" (the in-process reference TPM,
	// for tests only).
	//
	// Security: /dev/tpm0 bypasses the kernel resource manager; objects
	// left loaded by a crashed process stay loaded until flushed. tcp://
	// and unix:// carry TPM commands in clear: use them only on loopback
	// or a trusted link (parameter encryption is not used).
	Device string
	// EventLogPath is the binary TCG event log; "" means
	// /sys/kernel/security/tpm0/binary_bios_measurements.
	EventLogPath string
}

// DefaultEventLogPath is where Linux exposes the firmware event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// Device kinds after parsing.
const (
	kindAuto      = "auto"
	kindPath      = "path"
	kindTCP       = "tcp"
	kindUnix      = "unix"
	kindSimulator = "simulator"
)

// device is a parsed Config.Device.
type device struct {
	kind string
	addr string // path or host:port
}

// ParseDevice validates a device string as Open would interpret it, so that
// plugin configuration can fail early with a clear reason. It wraps
// ErrBadDevice.
func ParseDevice(s string) error {
	_, err := parseDevice(s)
	return err
}

func parseDevice(s string) (device, error) {
	bad := func(format string, a ...any) (device, error) {
		return device{}, fmt.Errorf("%w %q: %s", ErrBadDevice, s, fmt.Sprintf(format, a...))
	}
	if s != strings.TrimSpace(s) {
		return bad("leading or trailing white space")
	}
	switch {
	case s == "":
		return device{kind: kindAuto}, nil
	case s == "simulator":
		return device{kind: kindSimulator}, nil
	case strings.HasPrefix(s, "tcp://"):
		hp := strings.TrimPrefix(s, "tcp://")
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return bad("want tcp://host:port: %v", err)
		}
		if host == "" {
			return bad("missing host in tcp://host:port")
		}
		if strings.ContainsAny(host, "/?#@") {
			return bad("host %q has URL syntax; want tcp://host:port only", host)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return bad("port %q is not a number in 1..65535", port)
		}
		return device{kind: kindTCP, addr: hp}, nil
	case strings.HasPrefix(s, "unix://"):
		p := strings.TrimPrefix(s, "unix://")
		if !filepath.IsAbs(p) {
			return bad("want unix:///absolute/path (three slashes)")
		}
		return device{kind: kindUnix, addr: filepath.Clean(p)}, nil
	case strings.Contains(s, "://"):
		return bad("unknown scheme; want tcp://, unix://, an absolute path, \"simulator\" or empty for autodetection")
	case filepath.IsAbs(s):
		return device{kind: kindPath, addr: filepath.Clean(s)}, nil
	default:
		return bad("not an absolute path; want /dev/tpmrm0, tcp://host:port, unix:///path, \"simulator\" or empty for autodetection")
	}
}
