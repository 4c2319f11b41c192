package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/glaceon/glaceon/flyapi/flyapitest"
	"github.com/glaceon/glaceon/hack/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }

// TestDemo runs `make demo`'s program against freshly built binaries, so a
// change that breaks the README's first command fails make test: once with
// the built-in double, once in FLY_API_BASE_URL mode against an API it does
// not start itself.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	glaceonBin := testkit.Binary(t, "github.com/glaceon/glaceon/cmd/glaceon")
	sidecarBin := testkit.SidecarBinary(t)
	run := func(t *testing.T) {
		d := demo{glaceonBin: glaceonBin, sidecarBin: sidecarBin}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := d.run(ctx); err != nil {
			t.Fatalf("demo: %v", err)
		}
	}
	t.Run("built-in double", func(t *testing.T) {
		t.Setenv("FLY_API_BASE_URL", "")
		t.Setenv("FLY_API_TOKEN", "")
		run(t)
	})
	t.Run("UDP blocked", func(t *testing.T) {
		t.Setenv("FLY_API_BASE_URL", "")
		t.Setenv("FLY_API_TOKEN", "")
		d := demo{glaceonBin: glaceonBin, sidecarBin: sidecarBin, blockUDP: true}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := d.run(ctx); err != nil {
			t.Fatalf("demo with UDP blocked: %v", err)
		}
	})
	t.Run("FLY_API_BASE_URL", func(t *testing.T) {
		api := flyapitest.Start(t, flyapitest.Options{Logf: func(string, ...any) {}})
		t.Setenv("FLY_API_BASE_URL", api.URL())
		t.Setenv("FLY_API_TOKEN", api.Token())
		t.Setenv("FLY_WG_GATEWAY_PORT", fmt.Sprint(api.GatewayPort()))
		t.Setenv("GLACEON_DEMO_ORG", "acme")
		t.Setenv("GLACEON_DEMO_TARGET", "echo.flycast")
		run(t)
		if n := len(api.Peers("")); n != 0 {
			t.Errorf("%d peers left at the API", n)
		}
	})
}
