"""The agent's kernel work: nftables tables (`nft`), the NFLOG reader (`nflog`), network
namespaces (`netns`). Imports only `formats` besides itself."""
