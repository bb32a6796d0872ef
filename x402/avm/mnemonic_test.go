package avm

import (
	"strings"
	"testing"

	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/mnemonic"
)

// TestSignerFromMnemonicEchoesNoWord: a mistyped, missing, extra or
// swapped word is refused with an error that quotes none of the words: the
// same defect in two different mnemonics gives the same error, and the
// mistyped word is not in it.
func TestSignerFromMnemonicEchoesNoWord(t *testing.T) {
	defects := map[string]func([]string) []string{
		"typo":    func(l []string) []string { l[7] += "qzx"; return l },
		"short":   func(l []string) []string { return l[:24] },
		"long":    func(l []string) []string { return append(l, l[0]) },
		"swapped": func(l []string) []string { l[3], l[24] = l[24], l[3]; return l },
		"bad sum": func(l []string) []string { l[24] = l[0]; return l },
	}
	for name, defect := range defects {
		var msgs []string
		for range 2 {
			words, err := mnemonic.FromPrivateKey(crypto.GenerateAccount().PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			list := defect(strings.Fields(words))
			if name == "swapped" && list[3] == list[24] {
				continue // a swap of equal words changes nothing
			}
			_, err = SignerFromMnemonic(strings.Join(list, "  "))
			if err == nil {
				t.Fatalf("%s: accepted", name)
			}
			if strings.Contains(err.Error(), "qzx") {
				t.Fatalf("%s: the error %q holds the mistyped word", name, err)
			}
			msgs = append(msgs, err.Error())
		}
		if len(msgs) == 2 && msgs[0] != msgs[1] {
			t.Errorf("%s: the error depends on the words: %q vs %q", name, msgs[0], msgs[1])
		}
		if name == "typo" && !strings.Contains(msgs[0], "word 8 of 25") {
			t.Errorf("typo: %q, want the position of the bad word", msgs[0])
		}
	}
}
