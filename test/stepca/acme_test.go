package stepca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// acmeClient is a minimal RFC 8555 client: JWS-signed POSTs with an ES256
// account key (go.step.sm/crypto/jose), nonces from Replay-Nonce.
type acmeClient struct {
	t     testing.TB
	hc    *http.Client
	dir   struct{ NewNonce, NewAccount, NewOrder string }
	key   *ecdsa.PrivateKey
	kid   string
	nonce string
}

type acmeProblem struct {
	Type        string `json:"type"`
	Detail      string `json:"detail"`
	Subproblems []struct {
		Type   string `json:"type"`
		Detail string `json:"detail"`
	} `json:"subproblems"`
}

type acmeOrder struct {
	Status         string   `json:"status"`
	Authorizations []string `json:"authorizations"`
	Finalize       string   `json:"finalize"`
	Certificate    string   `json:"certificate"`
	Error          *acmeProblem
}

type acmeChallenge struct {
	Type   string       `json:"type"`
	URL    string       `json:"url"`
	Status string       `json:"status"`
	Token  string       `json:"token"`
	Error  *acmeProblem `json:"error"`
}

type acmeAuthz struct {
	Status     string `json:"status"`
	Identifier struct{ Type, Value string }
	Challenges []acmeChallenge `json:"challenges"`
}

func newACMEClient(t testing.TB, hc *http.Client, directoryURL string) *acmeClient {
	t.Helper()
	c := &acmeClient{t: t, hc: hc}
	resp, err := hc.Get(directoryURL)
	if err != nil {
		t.Fatalf("ACME directory: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&c.dir); err != nil || c.dir.NewOrder == "" {
		t.Fatalf("ACME directory %s: %v %+v", directoryURL, err, c.dir)
	}
	if c.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return c
}

// Nonce implements jose.NonceSource.
func (c *acmeClient) Nonce() (string, error) {
	if c.nonce != "" {
		n := c.nonce
		c.nonce = ""
		return n, nil
	}
	resp, err := c.hc.Head(c.dir.NewNonce)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if n := resp.Header.Get("Replay-Nonce"); n != "" {
		return n, nil
	}
	return "", fmt.Errorf("no Replay-Nonce from %s (%s)", c.dir.NewNonce, resp.Status)
}

// post sends payload (nil: POST-as-GET) to url, signed with the account
// key (jwk before the account exists, kid after). It returns the status,
// headers and body.
func (c *acmeClient) post(url string, payload any) (int, http.Header, []byte) {
	c.t.Helper()
	var body []byte
	if payload != nil {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			c.t.Fatal(err)
		}
	}
	opts := &jose.SignerOptions{NonceSource: c, ExtraHeaders: map[jose.HeaderKey]any{"url": url}}
	sk := jose.SigningKey{Algorithm: jose.ES256, Key: c.key}
	if c.kid == "" {
		opts.EmbedJWK = true
	} else {
		sk.Key = jose.JSONWebKey{Key: c.key, KeyID: c.kid}
	}
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	jws, err := signer.Sign(body)
	if err != nil {
		c.t.Fatalf("signing ACME request: %v", err)
	}
	// The flattened JSON serialization, with "payload": "" for POST-as-GET
	// (go-jose's FullSerialize leaves an empty payload out, which step-ca
	// refuses as malformed).
	compact, err := jws.CompactSerialize()
	if err != nil {
		c.t.Fatal(err)
	}
	parts := strings.Split(compact, ".")
	flat, err := json.Marshal(map[string]string{"protected": parts[0], "payload": parts[1], "signature": parts[2]})
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.hc.Post(url, "application/jose+json", bytes.NewReader(flat))
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	c.nonce = resp.Header.Get("Replay-Nonce")
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// postJSON is post expecting a success status and a JSON answer in out.
func (c *acmeClient) postJSON(url string, payload, out any) http.Header {
	c.t.Helper()
	status, h, b := c.post(url, payload)
	if status >= 300 {
		c.t.Fatalf("POST %s: %d %s", url, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("POST %s: %v: %s", url, err, b)
		}
	}
	return h
}

func (c *acmeClient) newAccount() {
	c.t.Helper()
	h := c.postJSON(c.dir.NewAccount, map[string]any{"termsOfServiceAgreed": true}, nil)
	if c.kid = h.Get("Location"); c.kid == "" {
		c.t.Fatal("newAccount: no Location")
	}
}

// newOrder orders a certificate for one permanent identifier.
func (c *acmeClient) newOrder(permanentIdentifier string) (orderURL string, o acmeOrder) {
	c.t.Helper()
	h := c.postJSON(c.dir.NewOrder, map[string]any{
		"identifiers": []any{map[string]string{"type": "permanent-identifier", "value": permanentIdentifier}},
	}, &o)
	return h.Get("Location"), o
}

// deviceAttestChallenge fetches the order's one authorization and returns
// its device-attest-01 challenge.
func (c *acmeClient) deviceAttestChallenge(o acmeOrder, permanentIdentifier string) acmeChallenge {
	c.t.Helper()
	if len(o.Authorizations) != 1 {
		c.t.Fatalf("order has %d authorizations", len(o.Authorizations))
	}
	var az acmeAuthz
	c.postJSON(o.Authorizations[0], nil, &az)
	if az.Identifier.Type != "permanent-identifier" || az.Identifier.Value != permanentIdentifier {
		c.t.Fatalf("authorization for %+v", az.Identifier)
	}
	for _, ch := range az.Challenges {
		if ch.Type == "device-attest-01" {
			return ch
		}
	}
	c.t.Fatalf("no device-attest-01 challenge in %+v", az.Challenges)
	return acmeChallenge{}
}

// keyAuthorization is token "." base64url(SHA-256 JWK thumbprint of the
// account key) (RFC 8555 8.1).
func (c *acmeClient) keyAuthorization(token string) string {
	c.t.Helper()
	jwk := jose.JSONWebKey{Key: c.key.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		c.t.Fatal(err)
	}
	return token + "." + base64.RawURLEncoding.EncodeToString(tp)
}

// respond posts the attestation object to the challenge.
func (c *acmeClient) respond(ch acmeChallenge, attObj []byte) (status int, got acmeChallenge, body []byte) {
	c.t.Helper()
	status, _, body = c.post(ch.URL, map[string]string{"attObj": base64.RawURLEncoding.EncodeToString(attObj)})
	if status < 300 {
		if err := json.Unmarshal(body, &got); err != nil {
			c.t.Fatalf("challenge answer: %v: %s", err, body)
		}
	}
	return status, got, body
}

// finalize sends the CSR, waits for the order to be valid and downloads
// the certificate chain (PEM).
func (c *acmeClient) finalize(orderURL string, o acmeOrder, csrDER []byte) []byte {
	c.t.Helper()
	c.postJSON(o.Finalize, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csrDER)}, &o)
	for i := 0; o.Status != "valid"; i++ {
		if o.Status == "invalid" || i > 50 {
			c.t.Fatalf("order %s: %+v", orderURL, o)
		}
		time.Sleep(100 * time.Millisecond)
		c.postJSON(orderURL, nil, &o)
	}
	status, _, b := c.post(o.Certificate, nil)
	if status != http.StatusOK {
		c.t.Fatalf("certificate: %d %s", status, b)
	}
	return b
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
