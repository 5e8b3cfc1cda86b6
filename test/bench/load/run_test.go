package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/internal/softagent"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/server/plugin"
	"github.com/tpmid/tpmid/pkg/server/profile"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// TestPercentile: nearest rank over sorted latencies.
func TestPercentile(t *testing.T) {
	p := &phase{}
	if got := p.percentile(0.5); got != 0 {
		t.Fatalf("empty: %v", got)
	}
	for i := 1; i <= 100; i++ {
		p.lat = append(p.lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := p.percentile(c.q); got != c.want {
			t.Errorf("p%v = %v, want %v", c.q*100, got, c.want)
		}
	}
}

// TestProcFigures: the CPU time and peak RSS read from /proc for this
// process agree with what the process knows of itself.
func TestProcFigures(t *testing.T) {
	end := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(end) { // burn some CPU
	}
	got, self := procCPU(os.Getpid()), selfCPU()
	if got <= 0 || got > self+20*time.Millisecond || got < self-100*time.Millisecond {
		t.Fatalf("procCPU = %v, getrusage says %v", got, self)
	}
	if procCPU(-1) != 0 {
		t.Fatal("procCPU of no process is not 0")
	}
	rss, err := peakRSS(os.Getpid())
	if err != nil || rss < 1024 {
		t.Fatalf("peakRSS = %d KiB, %v", rss, err)
	}
	if _, err := peakRSS(-1); err == nil {
		t.Fatal("peakRSS of no process: no error")
	}
}

// TestPluginData: the server plugin's own Validate accepts the
// configuration the harness sends, for both stores.
func TestPluginData(t *testing.T) {
	ca, err := testca.New("bench-load test")
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "ek.pem")
	if err := ca.WritePEM(bundle); err != nil {
		t.Fatal(err)
	}
	caDir := t.TempDir()
	if _, err := issuer.Init(context.Background(), issuer.InitOptions{Dir: caDir}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ store, caDir string }{
		{filepath.Join(t.TempDir(), "tpmid.db"), ""},
		{"postgres://postgres@127.0.0.1:5432/x?sslmode=disable", ""},
		{filepath.Join(t.TempDir(), "tpmid-ca.db"), caDir},
	} {
		resp, err := plugin.New().Validate(context.Background(), &configv1.ValidateRequest{
			CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: trustDomain},
			HclConfiguration:  pluginData(bundle, c.store, c.caDir),
		})
		if err != nil || !resp.GetValid() {
			t.Fatalf("store %s, ca_dir %q: Validate = %v, %v", c.store, c.caDir, resp, err)
		}
	}
	resp, err := plugin.New().Validate(context.Background(), &configv1.ValidateRequest{
		CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: trustDomain},
		HclConfiguration:  pluginData(bundle, "/x", "") + "pcrs = [99]\n",
	})
	if err != nil || resp.GetValid() {
		t.Fatalf("a broken configuration passed Validate: %v, %v", resp, err)
	}
}

// TestAssignProfile: the sqlite-profile run's store holds a valid profile
// captured from the real log, assigned to every attester. (That it allows
// their boot, the run itself shows: a refused first attestation stops it.)
func TestAssignProfile(t *testing.T) {
	logBytes, err := os.ReadFile(realdata.Path(t, realLog))
	if err != nil {
		t.Fatal(err)
	}
	boot, err := softagent.NewBoot(logBytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testca.New("bench-load test")
	if err != nil {
		t.Fatal(err)
	}
	attesters, err := makeAttesters(ca, boot, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	if err := assignProfile(ctx, path, logBytes, attesters); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, a := range append(attesters, &softagent.Attester{Hostname: "not-assigned"}) {
		var got []store.Profile
		if err := st.View(ctx, func(tx store.Tx) error {
			got, err = tx.ProfilesFor(ctx, &store.Host{Hostname: a.Hostname})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		want := 1
		if a.Hostname == "not-assigned" {
			want = 0
		}
		if len(got) != want {
			t.Fatalf("%s: %d profiles, want %d", a.Hostname, len(got), want)
		}
		if want == 1 {
			if _, err := profile.ParseProfile(got[0].Body); err != nil {
				t.Fatalf("stored profile: %v", err)
			}
		}
	}
}
