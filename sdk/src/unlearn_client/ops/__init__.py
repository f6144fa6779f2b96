"""The API's operations, each written once as a flow (see ``unlearn_client.flow``)."""
