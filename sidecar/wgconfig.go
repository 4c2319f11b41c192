package sidecar

import (
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/glaceon/glaceon/flyapi/wgquick"
)

// LoadWireGuardConfig reads and parses the wg-quick file at path. Every error
// is a one-line *UsageError naming --wg-config; none contains key material.
func LoadWireGuardConfig(path string) (*wgquick.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		hint := "check the path and that the Secret is mounted"
		if errors.Is(err, fs.ErrPermission) {
			hint = "make the file readable by the sidecar's user (Secret defaultMode 0400 with runAsUser, or fsGroup)"
		}
		return nil, usageErr("--wg-config", "cannot read %q: %v: %s", path, errors.Unwrap(err), hint)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, wgquick.MaxSize+1))
	if err != nil {
		return nil, usageErr("--wg-config", "cannot read %q: %v", path, err)
	}
	if len(data) > wgquick.MaxSize {
		return nil, usageErr("--wg-config", "%q is larger than %d bytes: give the wg-quick file written by `fly wireguard create` or `glaceon peer create`", path, wgquick.MaxSize)
	}
	// Parse validates the whole config (Address, Endpoint, AllowedIPs, ...).
	cfg, err := wgquick.Parse(data)
	if err != nil {
		return nil, usageErr("--wg-config", "%s: %v", path, err)
	}
	return cfg, nil
}
