package rfc2136

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The TSIG secret comes the one way every secret does: key_secret_file, else the fixed
// $MERIDIAN_RFC2136_SECRET. No setting names another variable.
func TestSecretFromFileOrFixedEnv(t *testing.T) {
	var cfg Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(f.Name, "secret-env") {
			t.Errorf("flag -%s lets a setting rename the secret's variable", f.Name)
		}
	})

	t.Setenv(SecretEnv, "")
	if _, err := cfg.secret(); err == nil || !strings.Contains(err.Error(), "$"+SecretEnv) {
		t.Fatalf("no secret: err = %v, want one naming $%s", err, SecretEnv)
	}
	t.Setenv(SecretEnv, "ZnJvbS1lbnY=")
	if s, err := cfg.secret(); err != nil || s != "ZnJvbS1lbnY=" {
		t.Fatalf("env: secret() = %q, %v", s, err)
	}
	cfg.KeySecretFile = filepath.Join(t.TempDir(), "tsig")
	if err := os.WriteFile(cfg.KeySecretFile, []byte("ZnJvbS1maWxl\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := cfg.secret(); err != nil || s != "ZnJvbS1maWxl" {
		t.Fatalf("file over env: secret() = %q, %v", s, err)
	}
}
