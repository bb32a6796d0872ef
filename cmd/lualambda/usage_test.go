package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lualambda/caddy-lualambda/wallet"
	"github.com/lualambda/caddy-lualambda/x402"
)

// run runs the CLI in process and returns its output and exit code.
func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		errOut.WriteString(ee.msg)
	default:
		code = 1
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

// isolate points every file and variable the CLI reads at a temporary
// directory, and the server at an address nothing listens on.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("LUALAMBDA_SERVER", "http://127.0.0.1:1/invoke")
	for _, v := range []string{wallet.EnvPath, wallet.EnvMnemonic, wallet.EnvNetwork, wallet.EnvAlgod, wallet.EnvAlgodToken} {
		t.Setenv(v, "")
	}
	return dir
}

func TestUsageErrorsExit2(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"status"},
		{"status", "a", "b"},
		{"status", "../../admin"},
		{"output", "x?y"},
		{"profiles", "extra"},
		{"invoke", "a.lua", "b.lua"},
		{"invoke", "-e", "return 1", "--profile", "nano/../../x"},
		{"invoke", "-e", "return 1", "--max-price", "lots"},
		{"invoke", "-e", "return 1", "--max-price", "-1"},
		{"pay", "ftp://example.com/x"},
		{"pay", "http://127.0.0.1:1/x", "--max-price", "1e9"},
		{"pay", "-H", "no colon", "http://127.0.0.1:1/x"},
		{"bench", "extra"},
		{"wallet", "import", "--network", "nowhere"},
		{"wallet", "import", "abandon"},
		{"wallet", "nonsense"},
		{"devnet", "extra"},
	} {
		_, stderr, code := run(t, "", args...)
		if code != 2 || stderr == "" {
			t.Errorf("%q: exit %d (%q), want 2 with a message", args, code, stderr)
		}
	}
}

func TestWalletImportAndPrecedence(t *testing.T) {
	dir := isolate(t)
	a, b := wallet.Generate(wallet.Devnet), wallet.Generate(wallet.Devnet)
	wordsA, _ := a.Mnemonic()
	wordsB, _ := b.Mnemonic()
	fileA := filepath.Join(dir, "a.json")

	// A mnemonic piped on several lines, upper case, as some wallets show it.
	custom := x402.AlgorandTestnet.CAIP2Short() // case matters: base64
	lines := strings.ToUpper(strings.Join(strings.Fields(wordsA)[:12], " ") + "\n" + strings.Join(strings.Fields(wordsA)[12:], " ") + "\n")
	if _, stderr, code := run(t, lines, "wallet", "import", "--wallet", fileA, "--network", custom); code != 0 {
		t.Fatalf("import from standard input: exit %d: %s", code, stderr)
	}
	w, err := wallet.Load(fileA)
	if err != nil || w.Address() != a.Address() {
		t.Fatalf("imported %v, %v; want %s", w, err, a.Address())
	}
	if w.Network != custom {
		t.Fatalf("network saved as %q, want the CAIP-2 id as given, %q", w.Network, custom)
	}
	// A second import never replaces it.
	if _, _, code := run(t, wordsB, "wallet", "import", "--wallet", fileA); code != 1 {
		t.Fatalf("import over an existing wallet: exit %d, want 1", code)
	}

	// $LUALAMBDA_MNEMONIC beats the default key file, --wallet beats both.
	t.Setenv(wallet.EnvMnemonic, wordsB)
	if out, _, code := run(t, "", "wallet", "address"); code != 0 || strings.TrimSpace(out) != b.Address() {
		t.Fatalf("with $%s: %q exit %d, want %s", wallet.EnvMnemonic, out, code, b.Address())
	}
	if out, _, code := run(t, "", "wallet", "address", "--wallet", fileA); code != 0 || strings.TrimSpace(out) != a.Address() {
		t.Fatalf("--wallet with $%s set: %q exit %d, want %s", wallet.EnvMnemonic, out, code, a.Address())
	}
	// export prints the words on stdout only, the warning on stderr.
	out, stderr, code := run(t, "", "wallet", "export", "--wallet", fileA)
	if code != 0 || strings.TrimSpace(out) != wordsA || strings.Contains(stderr, strings.Fields(wordsA)[0]+" ") {
		t.Fatalf("export: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	// A bad mnemonic in the environment fails (exit 1) without echoing it.
	t.Setenv(wallet.EnvMnemonic, "secretword "+strings.Join(strings.Fields(wordsB)[1:], " "))
	_, stderr, code = run(t, "", "wallet", "address")
	if code != 1 || strings.Contains(stderr, "secretword") || !strings.Contains(stderr, "word 1") {
		t.Fatalf("bad $%s: exit %d, %q", wallet.EnvMnemonic, code, stderr)
	}

	// A key file others can read is refused.
	if err := os.Chmod(fileA, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "", "wallet", "address", "--wallet", fileA); code != 1 || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("open key file: exit %d, %q", code, stderr)
	}
}

// TestLocalTestAlias: --local-test, the LuaLambda CLI's flag, is --local:
// it reaches the local run's checks, and the help says so.
func TestLocalTestAlias(t *testing.T) {
	isolate(t)
	_, stderr, code := run(t, "", "invoke", "--local-test", "--memory", "1", "-e", "1")
	if code != 2 || !strings.Contains(stderr, "--memory 1") {
		t.Fatalf("invoke --local-test: exit %d, %q; want the local run's --memory check", code, stderr)
	}
	stdout, _, code := run(t, "", "invoke", "--help")
	if code != 0 || !strings.Contains(stdout, "--local-test") {
		t.Fatalf("invoke --help does not name --local-test: %s", stdout)
	}
}

func TestServerURLTakesABareOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:8402":         "http://localhost:8402/invoke",
		"http://localhost:8402/":        "http://localhost:8402/invoke",
		"https://example.org/invoke":    "https://example.org/invoke",
		"https://example.org/api/lua/":  "https://example.org/api/lua",
		"http://127.0.0.1:8080/invoke/": "http://127.0.0.1:8080/invoke",
	} {
		if got := serverURL(in); got != want {
			t.Errorf("serverURL(%q) = %q, want %q", in, got, want)
		}
	}
}
