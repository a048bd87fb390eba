package main

import (
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/agent/membership"
)

func newKeygenCmd() *cobra.Command {
	var secret, namespace string
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "print a new gossip key (or a Kubernetes Secret holding one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := membership.GenerateGossipKey()
			if err != nil {
				return err
			}
			enc := base64.StdEncoding.EncodeToString(k)
			if secret == "" {
				fmt.Fprintln(cmd.OutOrStdout(), enc)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), `apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: %s
type: Opaque
data:
  gossip.key: %s
`, secret, namespace, base64.StdEncoding.EncodeToString([]byte(enc+"\n")))
			return nil
		},
	}
	cmd.Flags().StringVar(&secret, "k8s-secret", "", "print a Secret manifest with this name instead of the bare key")
	cmd.Flags().StringVar(&namespace, "namespace", "weft-system", "namespace of the Secret")
	return cmd
}
