"""The agent's kernel work: nftables tables (`nft`), the NFLOG reader (`nflog`) and its
messages' layout and parsing (`nflog_messages`), many messages made into records at once
(`nflog_batch`), network namespaces (`netns`). Imports
only `formats` besides itself."""
