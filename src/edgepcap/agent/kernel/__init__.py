"""The agent's kernel work: nftables tables (`nft`), the NFLOG reader (`nflog`) and its
messages' layout and parsing (`nflog_messages`), network namespaces (`netns`). Imports
only `formats` besides itself."""
