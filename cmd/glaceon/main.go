// Command glaceon is the glaceon manager (webhook and controllers) and its
// command-line tools: `glaceon peer create|list|remove` manages Fly
// WireGuard peers like `fly wireguard`, and `glaceon inject` shows what the
// webhook would do to a pod.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
