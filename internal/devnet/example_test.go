package devnet_test

import (
	"context"
	"fmt"
	"log"

	"github.com/algorand/go-algorand-sdk/v2/client/v2/algod"
	"github.com/algorand/go-algorand-sdk/v2/crypto"
	"github.com/algorand/go-algorand-sdk/v2/transaction"

	"github.com/lualambda/caddy-lualambda/internal/devnet"
)

// Start a devnet, fund an account from the faucet, opt it in to USDC with
// the SDK and fund it with USDC.
func Example() {
	ctx := context.Background()
	dev, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	c, err := algod.MakeClient(dev.URL(), dev.Token())
	if err != nil {
		log.Fatal(err)
	}
	payer := crypto.GenerateAccount()
	if err := dev.Fund(ctx, payer.Address, 1_000_000, 0); err != nil {
		log.Fatal(err)
	}
	params, err := c.SuggestedParams().Do(ctx)
	if err != nil {
		log.Fatal(err)
	}
	optIn, err := transaction.MakeAssetAcceptanceTxn(payer.Address.String(), nil, params, dev.USDC())
	if err != nil {
		log.Fatal(err)
	}
	_, signed, err := crypto.SignTransaction(payer.PrivateKey, optIn)
	if err != nil {
		log.Fatal(err)
	}
	txid, err := c.SendRawTransaction(signed).Do(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := transaction.WaitForConfirmation(c, txid, 4, ctx); err != nil {
		log.Fatal(err)
	}
	if err := dev.Fund(ctx, payer.Address, 0, 2_500_000); err != nil {
		log.Fatal(err)
	}
	h, err := c.AccountAssetInformation(payer.Address.String(), dev.USDC()).Do(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(dev.NetworkInfo().Name, dev.USDC(), h.AssetHolding.Amount)
	// Output: algorand-devnet 1001 2500000
}
