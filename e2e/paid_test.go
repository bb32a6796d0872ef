package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/types"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
	"github.com/lualambda/caddy-lualambda/internal/devnet/devnettest"
)

// paidChain is an in-process devnet with a merchant account (opted in to
// USDC) and a fee payer for the server's built-in facilitator.
type paidChain struct {
	*devnettest.Chain
	merchant     crypto.Account
	feePayerFile string
}

func newPaidChain(t *testing.T) *paidChain {
	t.Helper()
	c := devnettest.Start(t, devnet.Config{})
	return &paidChain{
		Chain:        c,
		merchant:     c.NewAccount(5_000_000, true, 0),
		feePayerFile: devnettest.MnemonicFile(t, c.NewAccount(5_000_000, false, 0)),
	}
}

// gate is an x402pay block on the devnet with the built-in facilitator.
func (c *paidChain) gate(price string) string {
	p := ""
	if price != "" {
		p = "price " + price
	}
	return fmt.Sprintf(`x402pay {
			pay_to %s
			network devnet
			asset usdc
			%s
			facilitator builtin {
				algod %s
				algod_token %s
				fee_payer {file.%s}
			}
		}`, c.merchant.Address, p, c.Dev.URL(), c.Dev.Token(), c.feePayerFile)
}

// usdc returns an address's USDC balance in base units.
func (c *paidChain) usdc(t *testing.T, addr string) uint64 {
	t.Helper()
	a, err := types.DecodeAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	return c.USDC(a)
}

// cliEnv is the environment of a user whose wallet is on the devnet.
func (c *paidChain) cliEnv(t *testing.T, server string) []string {
	return []string{
		"XDG_CONFIG_HOME=" + t.TempDir(),
		"LUALAMBDA_SERVER=" + server,
		"LUALAMBDA_ALGOD=" + c.Dev.URL(),
		"LUALAMBDA_ALGOD_TOKEN=" + c.Dev.Token(),
		"LUALAMBDA_WALLET=", "LUALAMBDA_MNEMONIC=", "LUALAMBDA_NETWORK=",
	}
}

// newFundedWallet creates the user's wallet with the CLI and funds it with
// 10 ALGO and usdc of USDC, checking each step.
func (c *paidChain) newFundedWallet(t *testing.T, env []string, usdc string) string {
	t.Helper()
	out, errOut, code := cli(t, "", env, "wallet", "create", "--network", "devnet")
	m := regexp.MustCompile(`address: ([A-Z2-7]{58})`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "lualambda wallet fund") || !strings.Contains(out, "█") {
		t.Fatalf("wallet create: exit %d\n%s\n%s", code, out, errOut)
	}
	addr := m[1]
	if out, errOut, code := cli(t, "", env, "wallet", "fund", "--usdc-amount", usdc); code != 0 || !strings.Contains(out, "funded "+addr) {
		t.Fatalf("wallet fund: exit %d\n%s\n%s", code, out, errOut)
	}
	return addr
}

// paidLua is a format for a lualambda route under /invoke/: the gate in
// front of it (first %s) and one profile "t" whose price is the second.
const paidLua = `
	handle_path /invoke/* {
		%s
		lualambda {
			acquire_timeout 60s
			profile t {
				memory 64MiB
				timeout 5s
				retention 60s
				output_cap 4KiB
				price %s
				warm 1
			}
		}
	}`

func TestPaidRunsOnDevnet(t *testing.T) {
	c := newPaidChain(t)
	files := t.TempDir()
	report := "quarterly report: 42\n"
	if err := os.WriteFile(filepath.Join(files, "report.txt"), []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startCaddy(t, serverConfig{site: fmt.Sprintf(paidLua, c.gate(""), "0.001") + fmt.Sprintf(`
	handle_path /files/* {
		%s
		root * %s
		file_server
	}`, c.gate("0.002"), files)})
	env := c.cliEnv(t, s.URL+"/invoke")
	merchant := c.merchant.Address.String()

	// create → fund ALGO only → status says not opted in → opt-in (twice).
	out, errOut, code := cli(t, "", env, "wallet", "create", "--network", "devnet")
	m := regexp.MustCompile(`address: ([A-Z2-7]{58})`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "█") || !strings.Contains(out, "lualambda wallet fund") {
		t.Fatalf("wallet create: exit %d\n%s\n%s", code, out, errOut)
	}
	addr := m[1]
	if out, _, code := cli(t, "", env, "wallet", "address"); code != 0 || strings.TrimSpace(out) != addr {
		t.Fatalf("wallet address: exit %d %q", code, out)
	}
	if out, _, code := cli(t, "", env, "wallet", "fund", "--usdc-amount", "0"); code != 0 || !strings.Contains(out, "10 ALGO") {
		t.Fatalf("wallet fund: exit %d %q", code, out)
	}
	if out, _, code := cli(t, "", env, "wallet", "status"); code != 0 || !strings.Contains(out, "10 ALGO") || !strings.Contains(out, "not opted in to USDC: run lualambda wallet opt-in") {
		t.Fatalf("wallet status before opt-in: exit %d\n%s", code, out)
	}
	if out, _, code := cli(t, "", env, "wallet", "opt-in"); code != 0 || !strings.Contains(out, "confirmed") {
		t.Fatalf("wallet opt-in: exit %d %q", code, out)
	}
	round := c.Dev.Round()
	if out, _, code := cli(t, "", env, "wallet", "opt-in"); code != 0 || !strings.Contains(out, "already opted in") || c.Dev.Round() != round {
		t.Fatalf("second opt-in: exit %d %q, round %d -> %d", code, out, round, c.Dev.Round())
	}
	if out, _, code := cli(t, "", env, "wallet", "fund", "--algo", "0", "--usdc-amount", "1"); code != 0 || !strings.Contains(out, "1 USDC") {
		t.Fatalf("wallet fund USDC: exit %d %q", code, out)
	}
	if out, _, code := cli(t, "", env, "wallet", "status"); code != 0 || !strings.Contains(out, "USDC:     1 USDC") || strings.Contains(out, "hint:") {
		t.Fatalf("wallet status funded: exit %d\n%s", code, out)
	}

	// A paid run: result on stdout, receipt and timings with -v, exactly
	// the price moved.
	payer0, merchant0 := c.usdc(t, addr), c.usdc(t, merchant)
	out, errOut, code = cli(t, "", env, "invoke", "-v", "--profile", "t", "--id", "paid-1", "-e", `print("paid run") return {n = 6 * 7}`)
	if code != 0 || strings.TrimSpace(out) != `{"n":42}` || !strings.Contains(errOut, "paid run") {
		t.Fatalf("paid invoke: exit %d, stdout %q\n%s", code, out, errOut)
	}
	tx := regexp.MustCompile(`settled: ([A-Z2-7]{52})`).FindStringSubmatch(errOut)
	if tx == nil || !strings.Contains(errOut, "paid: 0.001 USDC to "+merchant) || !strings.Contains(errOut, "network: algorand:") ||
		!regexp.MustCompile(`timings: challenge \S+, sign \S+, paid round trip \S+`).MatchString(errOut) {
		t.Fatalf("paid invoke -v lacks the receipt or timings:\n%s", errOut)
	}
	if _, err := c.Algod.WaitConfirmed(t.Context(), tx[1], 1); err != nil {
		t.Fatalf("the receipt's transaction %s is not on chain: %v", tx[1], err)
	}
	if p, mc := c.usdc(t, addr), c.usdc(t, merchant); p != payer0-1000 || mc != merchant0+1000 {
		t.Fatalf("balances: payer %d -> %d, merchant %d -> %d; want -1000 and +1000", payer0, p, merchant0, mc)
	}

	// Paying again for the same id: 409, not settled, nothing moves.
	payer1, merchant1, round := c.usdc(t, addr), c.usdc(t, merchant), c.Dev.Round()
	_, errOut, code = cli(t, "", env, "invoke", "--profile", "t", "--id", "paid-1", "-e", `return 1`)
	if code != 1 || !strings.Contains(errOut, "already run and paid for") || !strings.Contains(errOut, "lualambda output paid-1") {
		t.Fatalf("re-paying an id: exit %d %q", code, errOut)
	}
	if c.usdc(t, addr) != payer1 || c.usdc(t, merchant) != merchant1 || c.Dev.Round() != round {
		t.Fatalf("the second payment for an id moved funds or committed a round")
	}
	if out, _, code := cli(t, "", env, "output", "paid-1"); code != 0 || strings.TrimSpace(out) != `{"n":42}` {
		t.Fatalf("output of the paid run: exit %d %q", code, out)
	}

	// Over --max-price: refused before signing; no transaction at all.
	_, errOut, code = cli(t, "", env, "invoke", "--profile", "t", "--id", "paid-cap", "--max-price", "0.0005", "-e", `return 1`)
	if code != 1 || !strings.Contains(errOut, "nothing was signed") || !strings.Contains(errOut, "0.001 USDC") || !strings.Contains(errOut, "--max-price 0.001") {
		t.Fatalf("over the cap: exit %d %q", code, errOut)
	}
	if c.usdc(t, addr) != payer1 || c.usdc(t, merchant) != merchant1 || c.Dev.Round() != round {
		t.Fatalf("a refused offer moved funds or committed a round (round %d -> %d)", round, c.Dev.Round())
	}

	// A Lua error is the user's: the run happened and is charged.
	_, errOut, code = cli(t, "", env, "invoke", "-v", "--profile", "t", "--id", "paid-err", "-e", `error("boom")`)
	if code != 1 || !strings.Contains(errOut, "boom") || !strings.Contains(errOut, "settled: ") {
		t.Fatalf("paid Lua error: exit %d %q", code, errOut)
	}
	if p, mc := c.usdc(t, addr), c.usdc(t, merchant); p != payer1-1000 || mc != merchant1+1000 {
		t.Fatalf("a Lua error must settle: payer %d -> %d, merchant %d -> %d", payer1, p, merchant1, mc)
	}

	// lualambda pay buys a static file behind x402pay.
	payer2, merchant2 := c.usdc(t, addr), c.usdc(t, merchant)
	dst := filepath.Join(t.TempDir(), "report.txt")
	_, errOut, code = cli(t, "", env, "pay", "-v", "-o", dst, s.URL+"/files/report.txt")
	got, _ := os.ReadFile(dst)
	if code != 0 || string(got) != report || !strings.Contains(errOut, "200 OK") || !strings.Contains(errOut, "paid: 0.002 USDC") {
		t.Fatalf("pay -o: exit %d, file %q\n%s", code, got, errOut)
	}
	if p, mc := c.usdc(t, addr), c.usdc(t, merchant); p != payer2-2000 || mc != merchant2+2000 {
		t.Fatalf("pay: payer %d -> %d, merchant %d -> %d; want -2000 and +2000", payer2, p, merchant2, mc)
	}
	if out, _, code := cli(t, "", env, "pay", s.URL+"/files/report.txt"); code != 0 || out != report {
		t.Fatalf("pay to stdout: exit %d %q", code, out)
	}
	// A missing file is not sold: 404, no settlement.
	payer3, round := c.usdc(t, addr), c.Dev.Round()
	if _, errOut, code := cli(t, "", env, "pay", s.URL+"/files/none.txt"); code != 1 || !strings.Contains(errOut, "404") {
		t.Fatalf("pay for a missing file: exit %d %q", code, errOut)
	}
	if c.usdc(t, addr) != payer3 || c.Dev.Round() != round {
		t.Fatal("a 404 was charged")
	}
}

func TestPaidPoolFailureIsNotCharged(t *testing.T) {
	c := newPaidChain(t)
	// QEMU that cannot start: the pool has no VM to give.
	s := startCaddy(t, serverConfig{global: "qemu /bin/false", site: fmt.Sprintf(paidLua, c.gate(""), "0.001")})
	env := c.cliEnv(t, s.URL+"/invoke")
	addr := c.newFundedWallet(t, env, "1")
	payer0, merchant0, round := c.usdc(t, addr), c.usdc(t, c.merchant.Address.String()), c.Dev.Round()
	_, errOut, code := cli(t, "", env, "invoke", "--profile", "t", "--id", "no-vm", "-e", `return 1`)
	if code != 1 || !strings.Contains(errOut, "503") || !strings.Contains(errOut, "not settled") {
		t.Fatalf("paid run with no VM: exit %d %q", code, errOut)
	}
	if c.usdc(t, addr) != payer0 || c.usdc(t, c.merchant.Address.String()) != merchant0 || c.Dev.Round() != round {
		t.Fatalf("a run that never happened was charged (round %d -> %d)", round, c.Dev.Round())
	}
}

// TestFiveCommands runs the README's "paid run in five commands" on the
// devnet, as written but for the ports: the devnet and the wallet meet
// through their default token, the server's receiving account is a second
// wallet.
func TestFiveCommands(t *testing.T) {
	dir := t.TempDir()
	algodPort := freePort(t)
	algod := fmt.Sprintf("http://127.0.0.1:%d", algodPort)
	// 1. lualambda devnet &
	dev := exec.Command(filepath.Join(bin, "lualambda"), "devnet", "--listen", fmt.Sprintf("127.0.0.1:%d", algodPort))
	devLog := filepath.Join(dir, "devnet.log")
	logFile, err := os.Create(devLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	dev.Stdout, dev.Stderr = logFile, logFile
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGINT)
		_ = dev.Wait()
	})
	env := []string{"XDG_CONFIG_HOME=" + filepath.Join(dir, "cfg"), "LUALAMBDA_ALGOD=" + algod,
		"LUALAMBDA_ALGOD_TOKEN=", "LUALAMBDA_WALLET=", "LUALAMBDA_MNEMONIC=", "LUALAMBDA_NETWORK="}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(algod + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(devLog)
			t.Fatalf("lualambda devnet did not start: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// 2. lualambda wallet create --network devnet --fund --wallet merchant.json
	merchantFile := filepath.Join(dir, "merchant.json")
	if out, errOut, code := cli(t, "", env, "wallet", "create", "--network", "devnet", "--fund", "--wallet", merchantFile); code != 0 || !strings.Contains(out, "100 USDC") {
		t.Fatalf("merchant wallet: exit %d\n%s\n%s", code, out, errOut)
	}
	// 3. PAY_TO=$(lualambda wallet address --wallet merchant.json) caddy run --config Caddyfile.devnet &
	payTo, _, code := cli(t, "", env, "wallet", "address", "--wallet", merchantFile)
	if code != 0 {
		t.Fatalf("merchant address: exit %d", code)
	}
	t.Setenv("PAY_TO", strings.TrimSpace(payTo))
	// The site block of the repository's Caddyfile.devnet, as written; its
	// {$LUALAMBDA_ALGOD} points it at this test's devnet.
	t.Setenv("LUALAMBDA_ALGOD", algod)
	s := startCaddy(t, serverConfig{site: siteBlock(t, filepath.Join("..", "Caddyfile.devnet"))})
	// 4. lualambda wallet create --network devnet --fund
	if out, errOut, code := cli(t, "", env, "wallet", "create", "--network", "devnet", "--fund"); code != 0 || !strings.Contains(out, "100 USDC") {
		t.Fatalf("user wallet: exit %d\n%s\n%s", code, out, errOut)
	}
	// 5. echo 'return 2 + 2' | lualambda invoke --server http://localhost:8080/invoke --profile nano -v
	out, errOut, code := cli(t, "return 2 + 2", env, "invoke", "--server", s.URL+"/invoke", "--profile", "nano", "-v")
	if code != 0 || strings.TrimSpace(out) != "4" || !strings.Contains(errOut, "paid: 0.001 USDC to "+strings.TrimSpace(payTo)) || !strings.Contains(errOut, "settled: ") {
		t.Fatalf("paid invoke: exit %d, stdout %q\n%s", code, out, errOut)
	}
	if out, _, code := cli(t, "", env, "wallet", "status", "--wallet", merchantFile); code != 0 || !strings.Contains(out, "100.001 USDC") {
		t.Fatalf("merchant status: exit %d\n%s", code, out)
	}
	if out, _, code := cli(t, "", env, "wallet", "status"); code != 0 || !strings.Contains(out, "99.999 USDC") {
		t.Fatalf("user status: exit %d\n%s", code, out)
	}
}

// siteBlock returns what is inside the one site block of a Caddyfile: the
// lines after the line that opens it ("ADDRESS {") and before its closing
// brace, the file's last non-empty line.
func siteBlock(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	start := -1
	for i, l := range lines {
		if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "#") && l != "{" && strings.HasSuffix(l, "{") {
			start = i
		}
	}
	if start < 0 || lines[len(lines)-1] != "}" {
		t.Fatalf("%s: no site block found", path)
	}
	return strings.Join(lines[start+1:len(lines)-1], "\n")
}
