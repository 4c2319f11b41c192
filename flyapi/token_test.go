package flyapi

import (
	"strings"
	"testing"
)

func TestNormalizeToken(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// fly-go tokens_test.go: scheme stripping (user tokens go out as Bearer).
		{"plain user token", "foobar", "Bearer foobar"},
		{"bearer scheme", "Bearer foobar", "Bearer foobar"},
		{"flyv1 scheme on user token", "FlyV1 foobar", "Bearer foobar"},
		{"bearer then flyv1", "Bearer FlyV1 foobar", "Bearer foobar"},
		{"flyv1 then bearer", "FlyV1 Bearer foobar", "Bearer foobar"},
		{"upper-case schemes", "BEARER FLYV1 foobar", "Bearer foobar"},
		{"mixed-case scheme", "bEaReR foobar", "Bearer foobar"},
		// fly-go tokens_test.go: GraphQL takes macaroons and user tokens, macaroons first.
		{"macaroon then user", "fm2_foobar,foobar", "FlyV1 fm2_foobar,foobar"},
		{"user then macaroon", "foobar,fm2_foobar", "FlyV1 fm2_foobar,foobar"},
		{"macaroon only", "fm2_foobar", "FlyV1 fm2_foobar"},
		// fly-go TestEmptyTokensAreIgnored.
		{"empty segments dropped", "FlyV1 fm2_foobar, ,foobar,", "FlyV1 fm2_foobar,foobar"},
		// macaroon prefixes.
		{"fm1r", "fm1r_abc", "FlyV1 fm1r_abc"},
		{"fm1a is a macaroon", "fm1a_abc", "FlyV1 fm1a_abc"},
		{"fm2 no underscore", "fm2", "FlyV1 fm2"},
		{"fm2x is not a macaroon", "fm2x_abc", "Bearer fm2x_abc"},
		{"FM2 upper is not a macaroon", "FM2_abc", "Bearer FM2_abc"},
		{"oauth token", "fo1_abcdef", "Bearer fo1_abcdef"},
		// fly tokens create output, copied with scheme, base64 payload.
		{"header-ready macaroons", "FlyV1 fm2_lJPE+/a=,fm2_xyz==", "FlyV1 fm2_lJPE+/a=,fm2_xyz=="},
		{"surrounding whitespace and newline", "  FlyV1 fm2_a,fm2_b \n", "FlyV1 fm2_a,fm2_b"},
		{"spaces after commas", "fm2_a, fm2_b ,  fo1_c", "FlyV1 fm2_a,fm2_b,fo1_c"},
		{"two macaroons and users interleaved", "u1,fm2_a,u2,fm1r_b", "FlyV1 fm2_a,fm1r_b,u1,u2"},
		{"tab after scheme", "Bearer\tfoobar", "Bearer foobar"},
		{"double space after scheme", "FlyV1  fm2_a", "FlyV1 fm2_a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeToken(tt.in)
			if err != nil {
				t.Fatalf("NormalizeToken(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizeToken(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := NormalizeToken(got)
			if err != nil || again != got {
				t.Fatalf("not idempotent: NormalizeToken(%q) = %q, %v", got, again, err)
			}
		})
	}
}

func TestNormalizeTokenErrors(t *testing.T) {
	tests := []struct{ name, in, wantMsg string }{
		{"empty", "", "token is empty"},
		{"spaces", "   ", "token is empty"},
		{"comma", ",", "token is empty"},
		{"commas and spaces", " , ,", "token is empty"},
		{"scheme only", "FlyV1", "token is empty"},
		{"schemes only", "Bearer FlyV1 ", "token is empty"},
		{"newline inside", "fm2_secretAAAA\nfm2_more", "control character"},
		{"scheme word as a segment", "x,Bearer", "bare Bearer/FlyV1"},
		{"scheme word as the only segment", ",BeArer", "bare Bearer/FlyV1"},
		{"space inside segment", "fm2_secretAAAA fm2_more", "space inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeToken(tt.in)
			if err == nil {
				t.Fatalf("NormalizeToken(%q) = %q, want error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "secretAAAA") {
				t.Fatalf("error leaks the token: %q", err)
			}
		})
	}
}
