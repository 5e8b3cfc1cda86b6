package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultShutdownGrace is how long in-flight requests get to finish once
// Serve's context ends.
const DefaultShutdownGrace = 10 * time.Second

// TLSConfig is the server's TLS configuration: TLS 1.2 or later, with the
// given certificate source (ServerCert.GetCertificate, or one from
// tls.LoadX509KeyPair).
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
}

// Serve serves the API on ln until ctx ends, then shuts down gracefully:
// the listener closes, idle connections close, and requests in flight get
// up to grace (DefaultShutdownGrace when zero) to finish. tlsConfig nil
// serves plain HTTP, which is for tests only: the secret and the chain
// would travel in clear. Serve returns nil after a shutdown asked by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsConfig *tls.Config, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.limits.RequestTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		TLSConfig:         tlsConfig,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("shutdown: requests still in flight after %s were cut off: %w", grace, err)
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
