// Command glaceon-sidecar exposes private Fly.io apps on local TCP listeners
// through a userspace WireGuard tunnel. See docs and `sidecar` package.
//
//	glaceon-sidecar --wg-config /etc/glaceon/wg.conf \
//	    --forward 127.0.0.2:80=myapp.flycast:80 [--forward ...] \
//	    [--health-addr 127.0.0.1:9901] [--metrics-addr IP:PORT] [--mtu 1420] [--shutdown-grace 25s]
//
// Bad flags or config: one line on stderr naming the field, exit status 2.
// `glaceon-sidecar --version` prints the version and commit.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/glaceon/glaceon/flyapi/version"
	"github.com/glaceon/glaceon/sidecar"
)

func main() {
	os.Exit(run())
}

func fail(err error) int {
	var ue *sidecar.UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "glaceon-sidecar: %s\n", ue.Error())
		return 2
	}
	fmt.Fprintf(os.Stderr, "glaceon-sidecar: %s\n", err.Error())
	return 1
}

func run() int {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Printf("glaceon-sidecar %s\n", version.String())
		return 0
	}
	opts, err := sidecar.ParseOptions(os.Args[1:], os.Getenv)
	if err != nil {
		return fail(err)
	}
	cfg, err := sidecar.LoadWireGuardConfig(opts.WGConfig)
	if err != nil {
		return fail(err)
	}
	limit, limitSource := sidecar.SetMemoryLimit(os.Getenv)

	zc := zap.NewProductionConfig()
	zc.Sampling = nil
	zc.DisableStacktrace = true
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	switch opts.LogLevel {
	case "debug":
		zc.Level = zap.NewAtomicLevelAt(zapcore.Level(-1))
	case "error":
		zc.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	}
	zl, err := zc.Build()
	if err != nil {
		return fail(err)
	}
	defer func() { _ = zl.Sync() }()
	log := zapr.NewLogger(zl).WithName("glaceon-sidecar")
	// Nothing is logged before New succeeds: a bad setting must produce
	// exactly one line on stderr.
	s, err := sidecar.New(opts, cfg, log)
	if err != nil {
		return fail(err)
	}
	log.Info("starting", "version", version.Version)
	log.Info("memory limit", "bytes", limit, "source", limitSource)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := s.Run(ctx); err != nil {
		log.Error(err, "sidecar failed")
		return 1
	}
	return 0
}
